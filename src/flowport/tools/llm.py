"""LLM nodes: render the prompt, call an OpenAI-compatible API, return text or a stream.

One async client per connection and event loop, with a large connection pool, built
lazily and reused across lines. Parameters named in the node pass through to the API;
every other node input is a template variable, as in prompt flow.

Failures: a server that cannot be reached (refused, unknown host, TLS) fails the node at
once with a message naming the node, the connection and the URL. What may pass later (429,
5xx, 422, timeouts, a server that hung up before answering) is tried again a few times,
with a capped backoff or the server's ``Retry-After``, never past the line's deadline
(``line_deadline``); each retry is logged on the ``flowport.llm`` logger.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import ssl
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

from flowport.connections import AzureOpenAIConnection, Connection
from flowport.tools.chat_parser import ROLES, parse_chat
from flowport.tools.openai_http import (
    CONNECT_TIMEOUT,
    APIError,
    OpenAIHTTP,
    address_field,
    create_ssl_context,
)
from flowport.tools.templates import compile_template, render
from flowport.tools.usage import record_usage

_FLOAT = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT = ("max_tokens", "n", "seed", "best_of", "logprobs")
_JSON = ("response_format", "tools", "tool_choice", "logit_bias", "functions", "function_call", "stop")
_STR = ("user", "suffix")
_BOOL = ("echo",)
API_PARAMS = frozenset(("model", "deployment_name", *_FLOAT, *_INT, *_JSON, *_STR, *_BOOL))
_COMPLETION_ONLY = frozenset(("suffix", "echo", "best_of", "logprobs"))
_CHAT_ONLY = frozenset(("response_format", "tools", "tool_choice", "functions", "function_call"))


_CHAT_TOOL_PARAMS = frozenset(
    [
        "connection",
        "prompt",
        "temperature",
        "top_p",
        "stream",
        "stop",
        "max_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "function_call",
        "functions",
        "tool_choice",
        "tools",
        "response_format",
        "seed",
    ]
)
_COMPLETION_TOOL_PARAMS = frozenset(
    [
        "connection",
        "prompt",
        "suffix",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "logprobs",
        "echo",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "best_of",
        "logit_bias",
        "user",
    ]
)


def tool_parameters(api: str, azure: bool) -> tuple[str, frozenset[str]]:
    """prompt flow's name for an llm node's tool and that tool's parameters, which a template may
    not use as variables (``OpenAI.chat``: ``prompt``, ``model``, ``temperature``, ...)."""
    params = _COMPLETION_TOOL_PARAMS if api == "completion" else _CHAT_TOOL_PARAMS
    if azure:
        params = params | {"deployment_name"} | ({"n"} if api == "chat" else set())
    else:
        params = params | {"model"}
    return f"{'AzureOpenAI' if azure else 'OpenAI'}.{api}", params


class LLMParamError(ValueError):
    """A node input meant for the API has a value the API cannot take."""


class LLMCallError(Exception):
    """The API answered an error (or could not be reached)."""


line_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("line_deadline", default=None)
"""When the running line must be done, in event loop time: retries never wait past it."""

log = logging.getLogger("flowport.llm")


# What prompt flow's LLM tool sends when the node does not say: the wire requests match.
CHAT_DEFAULTS: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
COMPLETION_DEFAULTS: dict[str, Any] = {
    "best_of": 1,
    "echo": False,
    "frequency_penalty": None,
    "logit_bias": {},
    "logprobs": None,
    "max_tokens": 16,
    "n": 1,
    "presence_penalty": None,
    "stop": None,
    "suffix": None,
    "temperature": 1.0,
    "top_p": 1.0,
    "user": "",
}
AZURE_CHAT_DEFAULTS: dict[str, Any] = {**CHAT_DEFAULTS, "n": 1}
"""prompt flow's Azure OpenAI tool also sends ``n``, and leaves out penalties it was not given."""
AZURE_COMPLETION_DEFAULTS = {
    k: v for k, v in COMPLETION_DEFAULTS.items() if k not in ("frequency_penalty", "presence_penalty")
}
MAX_RETRIES_ENV = "FLOWPORT_LLM_MAX_RETRIES"
DEFAULT_MAX_RETRIES = 4
"""Retries after the first attempt (prompt flow makes 100, up to 60 s apart)."""
MAX_UNPROCESSABLE_TRIES = 3
"""Consecutive 422 answers before giving up, as prompt flow counts them."""
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 8.0
"""Seconds before retry n without Retry-After: 1, 2, 4, 8, 8, ..."""
RETRY_MARGIN = 1.0
"""Seconds a retry must still have before the deadline once its wait is over."""
UNBOUNDED_WAIT_CAP = 60.0
"""The longest wait when no deadline is known (`flow test --node`; a line always has one)."""
MAX_PROMPT_TEMPLATES = 256
"""Compiled ``prompt`` input templates kept per node (cleared when full)."""
ERROR_REFERENCE = "[Error reference: https://platform.openai.com/docs/guides/error-codes/api-errors]"


def max_retries() -> int:
    """``FLOWPORT_LLM_MAX_RETRIES`` (0 turns retries off), else the default."""
    try:
        return max(0, int(os.environ.get(MAX_RETRIES_ENV, DEFAULT_MAX_RETRIES)))
    except ValueError:
        return DEFAULT_MAX_RETRIES


def _convert(name: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    try:
        if name in _FLOAT:
            return float(value)
        if name in _INT:
            return None if str(value).lower() == "inf" else int(value)
        if name in _BOOL:
            return value if isinstance(value, bool) else str(value).lower() == "true"
    except (TypeError, ValueError):
        raise LLMParamError(f"parameter {name!r} must be a number, got {value!r}") from None
    if name in _JSON and isinstance(value, str):
        text = value.strip()
        if name == "response_format" and text in ("text", "json_object"):
            return {"type": text}
        if text[:1] in "[{":
            try:
                return json.loads(text)
            except ValueError:
                raise LLMParamError(f"parameter {name!r} is not valid JSON: {value!r}") from None
        if name == "stop":
            return [value]
    if name == "stop" and not value:
        return None
    return value


def _call_choice(params: dict[str, Any], azure: bool) -> None:
    """What prompt flow's chat tools send with tools or functions: with tools, the functions are
    dropped and ``tool_choice`` defaults to null (OpenAI) or ``"auto"`` (Azure OpenAI); with
    functions alone, ``function_call`` defaults to ``"auto"``."""
    if params.get("tools"):
        params.pop("functions", None)
        params.pop("function_call", None)
        params.setdefault("tool_choice", "auto" if azure else None)
    elif params.get("functions"):
        params.setdefault("function_call", "auto")


def split_inputs(api: str, inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate API parameters from template variables, converting the parameters."""
    excluded = _CHAT_ONLY if api == "completion" else _COMPLETION_ONLY
    params: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    for key, value in inputs.items():
        if key in API_PARAMS and key not in excluded:
            converted = _convert(key, value)
            if converted is not None:
                params[key] = converted
        else:
            variables[key] = value
    return params, variables


class ClientPool:
    """One API client per connection and event loop, built on first use and kept."""

    def __init__(self) -> None:
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, OpenAIHTTP]] = (
            weakref.WeakKeyDictionary()
        )
        self._tls: ssl.SSLContext | None = None

    def get(self, connection: Connection) -> OpenAIHTTP:
        clients = self._clients.setdefault(asyncio.get_running_loop(), {})
        client = clients.get(id(connection))
        if client is None:
            if self._tls is None:
                self._tls = create_ssl_context()
            client = clients[id(connection)] = OpenAIHTTP(connection, self._tls)
        return client


class LLMTool:
    """The callable of one llm node."""

    def __init__(
        self,
        template: Any,
        api: str,
        connection: Connection,
        pool: ClientPool,
        node: str = "llm",
        defaults: dict[str, Any] | None = None,
    ) -> None:
        """``defaults``: parameters a tool sends unless the node says otherwise, over the usual ones."""
        self.template = template
        self.extra_defaults = defaults or {}
        self.api = api
        self.connection = connection
        self.pool = pool
        self.node = node
        self.connection_name = getattr(connection, "name", None) or type(connection).__name__
        self.max_retries = max_retries()
        self._prompts: dict[str, Any] = {}

    async def __call__(self, stream: bool = False, **inputs: Any) -> Any:
        template = self.template
        if "prompt" in inputs:  # prompt flow's tool takes an input named prompt as the template
            template = self._prompt_template(inputs.pop("prompt"))
        params, variables = split_inputs(self.api, inputs)
        model = params.pop("model", None) or params.pop("deployment_name", None)
        params.pop("deployment_name", None)
        if not model:
            raise LLMParamError(
                "an llm node needs 'model' (OpenAI) or 'deployment_name' (Azure) in its inputs"
            )
        azure = isinstance(self.connection, AzureOpenAIConnection)
        if self.api == "completion":
            defaults = AZURE_COMPLETION_DEFAULTS if azure else COMPLETION_DEFAULTS
        else:
            defaults = AZURE_CHAT_DEFAULTS if azure else CHAT_DEFAULTS
        defaults = {**defaults, **self.extra_defaults}
        params = {**defaults, **params}
        if self.api == "chat":
            _call_choice(params, azure)
        client = self.pool.get(self.connection)
        if self.api == "completion":
            prompt = render(template, variables)
            return await self._with_retries(self._complete, client, model, prompt, params, stream)
        escaped, markers = escape_roles(variables)
        messages = unescape_roles(parse_chat(render(template, escaped)), markers)
        return await self._with_retries(self._chat, client, model, messages, params, stream)

    def _prompt_template(self, source: Any) -> Any:
        """The compiled template of a ``prompt`` input (compiled once per distinct text)."""
        text = source if isinstance(source, str) else str(source)
        compiled = self._prompts.get(text)
        if compiled is None:
            if len(self._prompts) >= MAX_PROMPT_TEMPLATES:
                self._prompts.clear()
            compiled = self._prompts[text] = compile_template(text, f"{self.node}.prompt")
        return compiled

    async def _with_retries(self, call: Any, *args: Any) -> Any:
        """Retry what may pass later, a few times, never past the line's deadline; log each retry."""
        tries = self.max_retries + 1
        unprocessable = 0
        for attempt in range(1, tries + 1):
            try:
                return await call(*args)
            except APIError as exc:
                if not exc.retryable:
                    raise LLMCallError(self.describe(exc)) from exc
                unprocessable = unprocessable + 1 if exc.name == "UnprocessableEntityError" else 0
                if attempt == tries or unprocessable == MAX_UNPROCESSABLE_TRIES:
                    raise LLMCallError(f"Exceed max retry times. {self.describe(exc)}") from exc
                delay = _backoff(exc, attempt)
                left = _time_left()
                if left - delay < RETRY_MARGIN:
                    raise LLMCallError(
                        f"{self.describe(exc)} Not retried: after attempt {attempt}/{tries} the wait of "
                        f"{delay:g} s would leave no time for another before the line's deadline "
                        f"({left:.1f} s left)."
                    ) from exc
                log.warning(
                    "LLM node '%s' (connection '%s'): %s: %s; attempt %d/%d failed, retrying in %g s",
                    self.node,
                    self.connection_name,
                    exc.name,
                    exc.reason or exc,
                    attempt,
                    tries,
                    delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self, exc: APIError) -> str:
        """One line: prompt flow's text for an error the API answered; for no answer, what
        failed, where (node, connection, URL) and what to check."""
        if exc.reason is None:
            return f"OpenAI API hits {exc.name}: {exc} {ERROR_REFERENCE}"
        where = f"{exc.url} for connection '{self.connection_name}'"
        if exc.unreachable:
            hint = f"Check the connection's {address_field(self.connection)}"
            if exc.reason.startswith("TLS"):
                hint += " and that its server's certificate is trusted (SSL_CERT_FILE, SSL_CERT_DIR)"
            return f"LLM node '{self.node}': cannot reach {where}: {exc.reason}. {hint}."
        return f"LLM node '{self.node}': no complete answer from {where}: {exc.reason}."

    async def _guarded(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """The stream's chunks; a stream that breaks off raises ``LLMCallError`` saying where."""
        count = 0
        try:
            async for chunk in events:
                count += 1
                yield chunk
        except APIError as exc:
            raise LLMCallError(
                f"LLM node '{self.node}': the streamed answer from {exc.url} for connection "
                f"'{self.connection_name}' broke off after {count} chunks: {exc.reason or exc}."
            ) from exc

    def _stream_options(self) -> dict[str, Any]:
        if isinstance(self.connection, AzureOpenAIConnection):
            return {}
        return {"stream_options": {"include_usage": True}}

    async def _chat(
        self,
        client: OpenAIHTTP,
        model: str,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        stream: bool,
    ) -> Any:
        body = {"model": model, "messages": messages, "stream": stream, **params}
        connect = _connect_timeout()
        if stream:
            events = await client.stream("chat/completions", {**body, **self._stream_options()}, connect)
            return _chat_chunks(self._guarded(events))
        completion = await client.create("chat/completions", body, connect)
        _record(completion.get("usage"))
        message = completion["choices"][0]["message"]
        if params.get("tools") or params.get("functions"):
            return full_message(message)
        return message.get("content")

    async def _complete(
        self, client: OpenAIHTTP, model: str, prompt: str, params: dict[str, Any], stream: bool
    ) -> Any:
        body = {"model": model, "prompt": prompt, "stream": stream, **params}
        connect = _connect_timeout()
        if stream:
            events = await client.stream("completions", {**body, **self._stream_options()}, connect)
            return _completion_chunks(self._guarded(events))
        completion = await client.create("completions", body, connect)
        _record(completion.get("usage"))
        return completion["choices"][0]["text"]


MESSAGE_FIELDS = ("content", "refusal", "role", "annotations", "audio", "function_call", "tool_calls")
"""A chat message's fields in the order prompt flow's tool returns them (the openai SDK's
``model_dump()``), every one present, ``None`` when the API left it out."""


def full_message(message: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as prompt flow returns it when a node passes tools or functions."""
    shaped = {field: message.get(field) for field in MESSAGE_FIELDS}
    call = shaped["function_call"]
    if isinstance(call, dict):
        shaped["function_call"] = {"arguments": call.get("arguments"), "name": call.get("name"), **call}
    calls = shaped["tool_calls"]
    if isinstance(calls, list):
        shaped["tool_calls"] = [_tool_call(c) if isinstance(c, dict) else c for c in calls]
    return {**shaped, **{k: v for k, v in message.items() if k not in shaped}}


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if isinstance(function, dict):
        function = {"arguments": function.get("arguments"), "name": function.get("name"), **function}
    shaped = {"id": call.get("id"), "function": function, "type": call.get("type"), **call}
    shaped["function"] = function
    return shaped


def _record(usage: dict[str, Any] | None) -> None:
    if usage:
        record_usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _backoff(exc: APIError, attempt: int) -> float:
    """The server's Retry-After, else 1, 2, 4, 8, 8, ... seconds."""
    if exc.retry_after is not None:
        return max(0.0, exc.retry_after)
    return min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (attempt - 1))


def _connect_timeout() -> float:
    """The connect timeout, shortened so that a server that never answers the connection is
    reported as unreachable before the line's deadline, not as the line's timeout."""
    return max(0.1, min(CONNECT_TIMEOUT, _time_left() - RETRY_MARGIN / 2))


def _time_left() -> float:
    """Seconds until the line's deadline (a long wait's cap when none is known)."""
    deadline = line_deadline.get()
    if deadline is None:
        return UNBOUNDED_WAIT_CAP + RETRY_MARGIN
    return deadline - asyncio.get_running_loop().time()


_ROLE_LINE = re.compile(r"(?im)^(\s*#?\s*)(" + "|".join(ROLES) + r")(\s*:\s*)$")


def escape_roles(variables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Hide role markers inside input values so a user cannot inject a system message.

    Each role word on a marker line becomes a unique token; ``unescape_roles`` puts the
    words back into the parsed messages.
    """
    markers: dict[str, str] = {}

    def hide(match: re.Match[str]) -> str:
        token = f"fp-role-{uuid.uuid4().hex}"
        markers[token] = match.group(2)
        return f"{match.group(1)}{token}{match.group(3)}"

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _ROLE_LINE.sub(hide, value) if ":" in value else value
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {k: walk(v) for k, v in variables.items()}, markers


def unescape_roles(messages: list[dict[str, Any]], markers: dict[str, str]) -> list[dict[str, Any]]:
    if not markers:
        return messages
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) and "fp-role-" in content:
            for token, word in markers.items():
                content = content.replace(token, word)
            message["content"] = content
    return messages


async def _chat_chunks(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    async for chunk in events:
        _record(chunk.get("usage"))
        choices = chunk.get("choices")
        if choices:  # prompt flow passes the empty first and last deltas on too
            yield (choices[0].get("delta") or {}).get("content") or ""


async def _completion_chunks(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    async for chunk in events:
        _record(chunk.get("usage"))
        choices = chunk.get("choices")
        if choices and choices[0].get("text"):
            yield choices[0]["text"]
