"""``promptflow.tools.openai_gpt4v``: the vision chat tool for flow code (``OpenAI(conn).chat(...)``)."""

from __future__ import annotations

import inspect
from typing import Any

from flowport.connections import Connection, OpenAIConnection
from flowport.tools.llm import ClientPool
from flowport.tools.vision import vision_tool
from promptflow.core._prompty import _generator, _run

_pool = ClientPool()


class _VisionChat:
    """Runs the built-in vision tool from synchronous flow code (on the stand-in's own event loop)."""

    connection_type: Any = OpenAIConnection

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def chat(self, prompt: str, **kwargs: Any) -> Any:
        """``prompt`` is the chat template; the other arguments are the tool's, as in prompt flow."""
        tool = vision_tool(str(prompt), self.connection_type, _pool, f"{type(self).__name__}.chat")
        return _run(_whole(tool.func(connection=self.connection, **kwargs)))


async def _whole(call: Any) -> Any:
    """The tool's answer; a stream read to the end and handed on as a generator of text."""
    result = await call
    if inspect.isasyncgen(result):
        return _generator([chunk async for chunk in result])
    return result


class OpenAI(_VisionChat):
    """``OpenAI(connection).chat(prompt=..., model=..., **inputs)``."""


__all__ = ["OpenAI"]
