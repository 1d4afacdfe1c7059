"""``promptflow.core.Prompty`` and ``AsyncPrompty``: a .prompty file loaded and called from flow code."""

from __future__ import annotations

import asyncio
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


def _run(coroutine: Any) -> Any:
    """Run to the end here, or in a thread of its own when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="flowport-prompty")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
