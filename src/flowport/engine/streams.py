"""Streamed node outputs: recorded as they pass, joined when nobody streams them."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from flowport.engine.errors import ExecutionError, tool_error
from flowport.engine.records import NodeRun, Status, clock
from flowport.engine.spans import node_failed
from flowport.tools.usage import usage_owner

_DONE = object()


class SharedGenerator:
    """A generator output read by other nodes: each reader gets a generator of all its items.

    prompt flow hands the generator itself to the nodes that read it; sharing it through
    a cache lets several readers (and the flow output) each see every item.
    """

    def __init__(self, source: Any) -> None:
        self._source = iter(source)
        self._items: list[Any] = []
        self._done = False
        self._lock = threading.Lock()

    def reader(self) -> Iterator[Any]:
        index = 0
        while True:
            with self._lock:
                if index == len(self._items):
                    if self._done:
                        return
                    item = next(self._source, _DONE)
                    if item is _DONE:
                        self._done = True
                        return
                    self._items.append(item)
                item = self._items[index]
            index += 1
            yield item


def join_sync(value: Any) -> Any:
    """Join a generator's items into one string; other values pass unchanged."""
    if isinstance(value, SharedGenerator):
        value = value.reader()
    if inspect.isgenerator(value):
        return "".join(str(item) for item in value)
    return value


async def join_async(value: Any) -> Any:
    if inspect.isasyncgen(value) or isinstance(value, NodeStream):
        return "".join([str(item) async for item in value])
    return join_sync(value)


def _next_or_done(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


class NodeStream:
    """An async iterator over a node's output chunks that completes the node's record.

    Sync generators are advanced in the thread pool so that a slow generator never
    blocks the event loop. Token usage seen while streaming is added to the node.
    A source that fails midway raises an ``ExecutionError`` (``as_error`` builds it: the
    node's error as a failure before streaming would have been reported), so whoever
    reads the stream can answer in prompt flow's error shape.
    """

    def __init__(
        self,
        source: Any,
        node_run: NodeRun,
        pool: Executor,
        as_error: Callable[[Exception], ExecutionError] | None = None,
    ) -> None:
        self._source = source
        self._node_run = node_run
        self._pool = pool
        self._as_error = as_error or (lambda exc: tool_error(node_run.node, exc))
        self._chunks: list[str] = []
        self._finished = False
        self.on_done: Callable[[], None] | None = None
        """Called once the stream is over (the line's trace span waits for it)."""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        try:
            if inspect.isasyncgen(self._source) or hasattr(self._source, "__anext__"):
                iterator = self._source.__aiter__()
                while True:
                    token = usage_owner.set(self._node_run)
                    try:
                        item = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        usage_owner.reset(token)
                    yield self._keep(item)
            else:
                loop = asyncio.get_running_loop()
                iterator = iter(self._source)
                while (item := await loop.run_in_executor(self._pool, _next_or_done, iterator)) is not _DONE:
                    yield self._keep(item)
        except Exception as exc:
            error = exc if isinstance(exc, ExecutionError) else self._as_error(exc)
            self._finish(Status.FAILED, error)
            raise error from (None if error is exc else exc)
        except BaseException as exc:  # cancelled, or the reader stopped
            self._finish(Status.FAILED, exc)
            raise
        self._finish(Status.COMPLETED)

    def _keep(self, item: Any) -> str:
        text = str(item)
        self._chunks.append(text)
        return text

    def _finish(self, status: Status, exc: BaseException | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        run = self._node_run
        run.status = status
        run.ended = clock()
        run.output = "".join(self._chunks)
        if isinstance(exc, ExecutionError):
            run.error = exc.to_dict()
        elif exc is not None:
            run.error = {"code": "StreamError", "message": f"({type(exc).__name__}) {exc}"}
        node_failed(run, exc)
        if self.on_done is not None:
            self.on_done()
