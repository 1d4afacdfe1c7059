"""prompt flow's LLM-family package tools, built in.

A ``type: python`` node whose source is ``{type: package, tool: NAME}`` runs one of these
without prompt flow or promptflow-tools installed, against the same connections:

* ``promptflow.tools.openai.chat`` / ``.completion`` and ``promptflow.tools.aoai.chat`` /
  ``.completion``: the node's ``prompt`` input is the jinja2 template, every other input not
  meant for the API is a template variable (the llm node's rules, ``tools.llm.LLMTool``);
* ``promptflow.tools.embedding.embedding``: ``input`` embedded with ``model`` (OpenAI) or
  ``deployment_name`` (Azure OpenAI); the vector as a list of floats.

``type: custom_llm`` nodes (``source: {type: package_with_prompt, path}``) run prompt flow's LLM
tool (``promptflow.tools.llm.llm``) and its vision chat tools (``VISION_TOOLS``, ``tools.vision``).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from flowport.connections import AzureOpenAIConnection, Connection, OpenAIConnection, ServerlessConnection
from flowport.tools.callable import CallMode, Param, ToolCallable
from flowport.tools.llm import ClientPool, LLMTool, _connect_timeout, _record
from flowport.tools.vision import vision_tool

_ANY_LLM_CONNECTION = AzureOpenAIConnection | OpenAIConnection | ServerlessConnection
EMBEDDING_MODEL = "text-embedding-ada-002"
"""prompt flow's default embedding model."""


class _Tools:
    """One ``LLMTool`` per connection of a node (its client, retries and error messages)."""

    def __init__(self, api: str, pool: ClientPool, node: str) -> None:
        self.api = api
        self.pool = pool
        self.node = node
        self._by_connection: dict[int, LLMTool] = {}

    def get(self, connection: Connection) -> LLMTool:
        tool = self._by_connection.get(id(connection))
        if tool is None:
            tool = self._by_connection[id(connection)] = LLMTool(
                None, self.api, connection, self.pool, self.node
            )
        return tool


def _llm(api: str, connection_type: Any) -> Callable[[ClientPool, str], ToolCallable]:
    def build(pool: ClientPool, node: str) -> ToolCallable:
        tools = _Tools(api, pool, node)

        async def call(connection: Connection, prompt: str, **inputs: Any) -> Any:
            return await tools.get(connection)(prompt=prompt, **inputs)

        params = {"connection": Param("connection", connection_type), "prompt": Param("prompt", str)}
        return ToolCallable(func=call, mode=CallMode.ASYNC, params=params, accepts_any=True)

    return build


def _embedding(pool: ClientPool, node: str) -> ToolCallable:
    tools = _Tools("embedding", pool, node)

    async def embedding(
        connection: Connection, input: str, deployment_name: str = "", model: str = EMBEDDING_MODEL
    ) -> list[float]:
        tool = tools.get(connection)
        if isinstance(connection, AzureOpenAIConnection):
            body: dict[str, Any] = {"model": deployment_name, "input": input, "encoding_format": "base64"}
        elif isinstance(connection, ServerlessConnection):
            body = {"input": [input], "model": model, "encoding_format": "float"}
        else:
            body = {"model": model, "input": input, "encoding_format": "base64"}
        client = pool.get(connection)

        async def create() -> Any:
            return await client.create("embeddings", body, _connect_timeout())

        answer = await tool._with_retries(create)
        usage = answer.get("usage") or {}
        _record({"prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": 0})
        return decode_embedding(answer["data"][0]["embedding"])

    params = {
        name: Param(name, _ANY_LLM_CONNECTION if name == "connection" else p.annotation, p.default)
        for name, p in inspect.signature(embedding).parameters.items()
    }
    return ToolCallable(func=embedding, mode=CallMode.ASYNC, params=params)


def decode_embedding(vector: Any) -> list[float]:
    """A vector as floats: the API's base64 answer is little-endian float32."""
    if isinstance(vector, str):
        raw = base64.b64decode(vector)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(x) for x in vector]


BUILTIN_PACKAGE_TOOLS: dict[str, Callable[[ClientPool, str], ToolCallable]] = {
    "promptflow.tools.openai.chat": _llm("chat", OpenAIConnection),
    "promptflow.tools.openai.completion": _llm("completion", OpenAIConnection),
    "promptflow.tools.aoai.chat": _llm("chat", AzureOpenAIConnection),
    "promptflow.tools.aoai.completion": _llm("completion", AzureOpenAIConnection),
    "promptflow.tools.embedding.embedding": _embedding,
}


PROMPT_LLM_TOOL = "promptflow.tools.llm.llm"
"""prompt flow's LLM tool (``type: custom_llm``, ``source: {type: package_with_prompt, path}``)."""


def prompt_llm_tool(template: Any, pool: ClientPool, node: str) -> ToolCallable:
    """``promptflow.tools.llm.llm`` for one node: its ``path`` template (or a ``prompt`` input),
    ``api`` chat or completion, ``model`` (OpenAI) or ``deployment_name`` (Azure OpenAI)."""
    by_key: dict[tuple[int, str], LLMTool] = {}

    async def llm(connection: Connection, api: str = "chat", stream: bool = False, **inputs: Any) -> Any:
        tool = by_key.get((id(connection), api))
        if tool is None:
            defaults = {"max_tokens": None} if api == "completion" else None  # the tool's default
            tool = by_key[(id(connection), api)] = LLMTool(template, api, connection, pool, node, defaults)
        inputs.pop("model" if isinstance(connection, AzureOpenAIConnection) else "deployment_name", None)
        return await tool(stream=stream, **inputs)

    params = {"connection": Param("connection", _ANY_LLM_CONNECTION), "api": Param("api", str, "chat")}
    return ToolCallable(func=llm, mode=CallMode.ASYNC, params=params, accepts_any=True, streams=True)


VISION_TOOLS: dict[str, Callable[[str, ClientPool, str], ToolCallable]] = {
    "promptflow.tools.openai_gpt4v.OpenAI.chat": lambda source, pool, node: vision_tool(
        source, OpenAIConnection, pool, node
    ),
    "promptflow.tools.aoai_gpt4v.AzureOpenAI.chat": lambda source, pool, node: vision_tool(
        source, AzureOpenAIConnection, pool, node
    ),
}
"""prompt flow's vision chat tools (``type: custom_llm``), built from the node's template text."""


_bridge: _Bridge | None = None
_bridge_lock = threading.Lock()


class _Bridge:
    """An event loop in a daemon thread, for flow code that calls the tools synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = ClientPool()
        threading.Thread(target=self.loop.run_forever, name="flowport-tools", daemon=True).start()

    def run(self, coro: Any) -> Any:
        """Run ``coro`` on the bridge's loop and wait for its result. The task starts in a copy of
        the caller's context (``call_soon_threadsafe`` copies it), so token usage lands on the
        calling node and the line's deadline holds."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, chunks: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                yield self.run(anext(chunks))
            except StopAsyncIteration:
                return


def sync_tool(name: str) -> Callable[..., Any]:
    """``promptflow.tools.openai.chat`` and the like as flow code calls them: a blocking function
    (a stream comes back as an iterator of text chunks). Runs on a private event loop."""

    def call(*args: Any, **kwargs: Any) -> Any:
        global _bridge
        with _bridge_lock:
            if _bridge is None:
                _bridge = _Bridge()
        bridge = _bridge
        tool = tools.get(id(bridge))
        if tool is None:
            tool = tools[id(bridge)] = BUILTIN_PACKAGE_TOOLS[name](bridge.pool, name)
        bound = inspect.signature(tool.func).bind_partial(*args, **kwargs) if args else None
        result = bridge.run(tool.func(**(bound.arguments if bound else kwargs)))
        if hasattr(result, "__anext__"):
            return bridge.iterate(result)
        return result

    tools: dict[int, ToolCallable] = {}
    call.__name__ = name.rsplit(".", 1)[-1]
    call.__qualname__ = call.__name__
    return call


def builtin_package_tool(name: str | None, pool: ClientPool, node: str) -> ToolCallable | None:
    """The built-in tool called ``name`` for one node, or None when flowport has none."""
    build = BUILTIN_PACKAGE_TOOLS.get(str(name))
    return build(pool, node) if build is not None else None
