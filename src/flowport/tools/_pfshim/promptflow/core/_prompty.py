"""``promptflow.core.Prompty`` and ``AsyncPrompty``: a .prompty file loaded and called from flow code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flowport.tools import prompty_hook


class AsyncPrompty:
    """``await AsyncPrompty.load(source=...)(**inputs)``; a stream comes back as an async iterator."""

    def __init__(self, call: Any) -> None:
        self._call = call

    @classmethod
    def load(cls, source: str | Path, **kwargs: Any) -> Any:
        """``kwargs``: ``model`` (a dict over the front matter's model: configuration, parameters, ...)."""
        return cls(prompty_hook.load(source, **kwargs))

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("a prompty takes its inputs as keyword arguments")
        return await self._call(**kwargs)


class Prompty(AsyncPrompty):
    """``Prompty.load(source=...)(**inputs)``, called synchronously; a stream is a generator of text."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if args:
            raise TypeError("a prompty takes its inputs as keyword arguments")
        return _run(self._whole(kwargs))

    async def _whole(self, inputs: dict[str, Any]) -> Any:
        result = await self._call(**inputs)
        if inspect.isasyncgen(result):
            return _generator([chunk async for chunk in result])
        return result


def _generator(chunks: list[str]) -> Iterator[str]:
    """A stream read to the end (this call owns its event loop), handed on as prompt flow's generator."""
    yield from chunks


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _run(coroutine: Any) -> Any:
    """Run on one event loop kept in a thread of its own (its HTTP clients are reused from call to
    call), so a synchronous call works from any thread, event loop or not; in the caller's context."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="flowport-prompty", daemon=True).start()
    loop, done = _loop, concurrent.futures.Future()

    def start() -> None:  # runs in the caller's context: the line's deadline and token usage
        task = loop.create_task(coroutine)
        task.add_done_callback(lambda t: _settle(t, done))

    loop.call_soon_threadsafe(start, context=contextvars.copy_context())
    return done.result()


def _settle(task: asyncio.Task[Any], done: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        done.cancel()
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())
