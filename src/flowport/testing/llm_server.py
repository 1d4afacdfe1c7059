"""Offline, deterministic OpenAI-compatible LLM server for tests, the demo and benchmarks.

Behaviour (all deterministic):

* Chat replies ``"Echo: " + <text of the last user message>`` (list contents join their parts
  with a space: a ``type: text`` part is its ``text``, a ``type: image_url`` part is
  ``[image <mime> <N> bytes]`` for a ``data:`` URL (N decoded bytes) or ``[image <url>]``, so a
  reply shows which images arrived, in order); completions reply ``"Echo: " + prompt`` (a list
  prompt uses its first element). With ``response_format={"type": "json_object"}`` the reply
  is ``json.dumps({"echo": <user text or prompt>})``.
* Tokens are whitespace-separated words. ``prompt_tokens`` counts the words of all message
  contents (or of the prompt), ``completion_tokens`` the words of the reply; a tool call
  counts as one token.
* ``stop`` cuts the reply before the first occurrence of any stop string; ``max_tokens`` (or
  ``max_completion_tokens``) keeps the first N words, with ``finish_reason="length"`` when
  that cut anything. ``n``, ``seed``, ``temperature`` and the like are accepted and ignored.
* Streams send one chunk per word, keeping its trailing whitespace
  (``"Echo: "``, ``"hello "``, ``"world"``).
* Triggers in the last user text (or the prompt): ``[[status:NNN]]`` (400-599) answers that
  status with an OpenAI-shaped error (429 adds ``retry-after: 0``); ``[[call:NAME]]`` answers
  with a call to the function NAME (arguments ``"{}"``, id ``call_NAME``): a ``tool_calls`` entry when the
  request has ``tools`` (unless ``tool_choice`` is ``"none"``), else a ``function_call`` when
  it has ``functions`` (unless ``function_call`` is ``"none"``).
* Fault triggers, for retry and failure tests: ``[[flaky:NNN:N]]`` answers status NNN to the
  first N requests with the same text, then answers normally; ``[[retry-after:S]]`` sets the
  ``retry-after`` header of a triggered error to S seconds; ``[[cut:K]]`` closes the connection
  in the middle of the answer: a stream after K events, a JSON answer after half its body
  (announced in full by ``content-length``).
* Embeddings (``/v1/embeddings``, Azure's ``/openai/deployments/{d}/embeddings``) are 8 numbers
  per input (``dimensions`` picks another length, up to 64), each ``k/256`` for the bytes of the
  SHA-256 of the input text: the same text always gets the same vector, and the values are exact
  in float32, so ``encoding_format: base64`` (little-endian float32, what the openai SDK asks
  for) decodes to the same numbers. ``prompt_tokens`` counts the words.
* Headers ``x-test-latency-ms`` and ``x-test-chunk-delay-ms`` override the delays per request.
* ``GET /_requests`` lists the last 100 model requests as ``{"path", "headers", "body"}``
  (lowercased headers, credential values redacted); ``DELETE /_requests`` clears the list.

Run it with ``python -m flowport.testing.llm_server --port 8000 --latency-ms 50``, or in
tests with ``with LLMServer() as server: OpenAI(base_url=server.base_url, api_key="x")``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import logging
import re
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flowport.testing.threaded_server import ThreadedServer

__all__ = ["DEFAULT_MODEL", "LLMServer", "create_app", "serve"]

Json = dict[str, Any]

DEFAULT_MODEL = "test-model"
MAX_RECORDS = 100
SYSTEM_FINGERPRINT = "fp_flowport_test"

_SECRET_HEADERS = frozenset({"authorization", "api-key"})
_REDACTED = "<redacted>"
_STATUS_RE = re.compile(r"\[\[status:([45]\d\d)\]\]")
_CALL_RE = re.compile(r"\[\[call:([A-Za-z0-9_.-]+)\]\]")
_FLAKY_RE = re.compile(r"\[\[flaky:([45]\d\d):(\d+)\]\]")
_RETRY_AFTER_RE = re.compile(r"\[\[retry-after:(\d+(?:\.\d+)?)\]\]")
_CUT_RE = re.compile(r"\[\[cut:(\d+)\]\]")
MAX_FLAKY_TEXTS = 1000
_WORD_RE = re.compile(r"\s*\S+\s*")
_DONE = b"data: [DONE]\n\n"
_INVALID = object()


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _json(data: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code, headers, "application/json")


def _error(
    status_code: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return _json({"error": error}, status_code, headers)


def _triggered_error(status_code: int, retry_after: str | None = None) -> Response:
    message = f"triggered error {status_code}"
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    if status_code == 429:
        headers.setdefault("retry-after", "0")
        return _error(429, message, type_="requests", code="rate_limit_exceeded", headers=headers)
    type_ = "server_error" if status_code >= 500 else "invalid_request_error"
    return _error(status_code, message, type_=type_, headers=headers)


class ConnectionCut(Exception):
    """Raised by a ``[[cut:K]]`` answer: uvicorn closes a connection whose answer failed midway."""


class _QuietCuts(logging.Filter):
    """Keep uvicorn from logging a traceback for each deliberate cut."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionCut))


logging.getLogger("uvicorn.error").addFilter(_QuietCuts())


class _CutResponse(Response):
    """Sends the head and the first ``keep`` body parts, then breaks off the connection."""

    def __init__(self, parts: list[bytes], keep: int, media_type: str, delay_ms: float = 0.0) -> None:
        super().__init__(media_type=media_type)
        self.parts = parts
        self.keep = keep
        self.delay_ms = delay_ms
        length = str(sum(len(p) for p in parts)).encode()
        self.raw_headers = [(b"content-type", media_type.encode()), (b"content-length", length)]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        for i, part in enumerate(self.parts[: self.keep]):
            if i and self.delay_ms > 0:
                await asyncio.sleep(self.delay_ms / 1000)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        raise ConnectionCut(f"connection cut after {self.keep} parts, as the request asked")


def _sse(data: Json) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(text for part in content if (text := _part_text(part)) is not None)
    return ""


_DATA_URL_RE = re.compile(r"^data:([^;,]*)(;base64)?,(.*)$", re.DOTALL)


def _part_text(part: Any) -> str | None:
    """A content part as the reply shows it: its text, or what image it carries."""
    if not isinstance(part, dict):
        return None
    if part.get("type") == "text" and "text" in part:
        return str(part["text"])
    if part.get("type") != "image_url":
        return None
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _BadRequest("An image_url part needs image_url.url.", "messages")
    data = _DATA_URL_RE.match(url)
    if data is None:
        return f"[image {url}]"
    try:
        size = len(base64.b64decode(data.group(3), validate=True)) if data.group(2) else len(data.group(3))
    except ValueError:
        raise _BadRequest("The image data URL is not valid base64.", "messages") from None
    return f"[image {data.group(1) or 'application/octet-stream'} {size} bytes]"


def _delay_ms(request: Request, header: str, default: float) -> float:
    value = request.headers.get(header)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise _BadRequest(f"Invalid {header} header: {value!r}") from None


def _auth_error(request: Request, api_key: str | None) -> Response | None:
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        key = authorization[7:].strip()
    else:
        key = request.headers.get("api-key", "")
    if not key:
        message = "You didn't provide an API key (Authorization: Bearer <key> or api-key: <key>)."
    elif api_key is not None and key != api_key:
        message = "Incorrect API key provided."
    else:
        return None
    return _error(401, message, code="invalid_api_key")


def _reply(user_text: str, body: Json) -> tuple[str, list[str], str]:
    """Build the reply text, its word pieces and the finish reason."""
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        text = json.dumps({"echo": user_text})
    else:
        text = "Echo: " + user_text
    stop = body.get("stop")
    if stop:
        stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
        cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
    pieces = _WORD_RE.findall(text)
    limit = body.get("max_tokens")
    if limit is None:
        limit = body.get("max_completion_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise _BadRequest("max_tokens must be a positive integer.", "max_tokens")
    if limit is not None and limit < len(pieces):
        pieces = pieces[:limit]
        pieces[-1] = pieces[-1].rstrip()
        return "".join(pieces), pieces, "length"
    return text, pieces, "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> Json:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _include_usage(body: Json) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _stream(frames: list[bytes], delay_ms: float, cut: int | None = None) -> Response:
    if cut is not None:
        return _CutResponse(frames, cut, "text/event-stream", delay_ms)

    async def content() -> AsyncIterator[bytes]:
        for i, frame in enumerate(frames):
            if i and delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            yield frame

    headers = {"cache-control": "no-cache"}
    return StreamingResponse(content(), headers=headers, media_type="text/event-stream")


class _Upstream:
    """Request handlers sharing one configuration, id counter and request log."""

    def __init__(self, latency_ms: float, chunk_delay_ms: float, api_key: str | None) -> None:
        self.latency_ms = latency_ms
        self.chunk_delay_ms = chunk_delay_ms
        self.api_key = api_key
        self.records: deque[Json] = deque(maxlen=MAX_RECORDS)
        self._ids = itertools.count(1)
        self._flaky: dict[str, int] = {}
        """How many requests each ``[[flaky:...]]`` text has failed so far."""

    def _fault(self, text: str) -> Response | None:
        """The error a ``[[status:...]]`` or (still) ``[[flaky:...]]`` trigger asks for, if any."""
        if "[[" not in text:
            return None
        after = _RETRY_AFTER_RE.search(text)
        retry_after = after.group(1) if after else None
        status = _STATUS_RE.search(text)
        if status is not None:
            return _triggered_error(int(status.group(1)), retry_after)
        flaky = _FLAKY_RE.search(text)
        if flaky is not None:
            failed = self._flaky.get(text, 0)
            if failed < int(flaky.group(2)):
                if len(self._flaky) >= MAX_FLAKY_TEXTS:
                    self._flaky.clear()
                self._flaky[text] = failed + 1
                return _triggered_error(int(flaky.group(1)), retry_after)
        return None

    async def chat(self, request: Request) -> Response:
        return await self._handle(request, chat=True, model=None)

    async def completions(self, request: Request) -> Response:
        return await self._handle(request, chat=False, model=None)

    async def azure_chat(self, request: Request) -> Response:
        return await self._handle(request, chat=True, model=request.path_params["deployment"])

    async def azure_completions(self, request: Request) -> Response:
        return await self._handle(request, chat=False, model=request.path_params["deployment"])

    async def embeddings(self, request: Request) -> Response:
        return await self._handle(request, chat=None, model=None)

    async def azure_embeddings(self, request: Request) -> Response:
        return await self._handle(request, chat=None, model=request.path_params["deployment"])

    async def models(self, request: Request) -> Response:
        error = _auth_error(request, self.api_key)
        if error is not None:
            return error
        model = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "flowport"}
        return _json({"object": "list", "data": [model]})

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def list_requests(self, request: Request) -> Response:
        return _json(list(self.records))

    async def clear_requests(self, request: Request) -> Response:
        self.records.clear()
        return Response(status_code=204)

    async def _handle(self, request: Request, *, chat: bool | None, model: str | None) -> Response:
        raw = await request.body()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = _INVALID
        headers = {k: _REDACTED if k in _SECRET_HEADERS else v for k, v in request.headers.items()}
        recorded = raw.decode("utf-8", "replace") if body is _INVALID else body
        self.records.append({"path": request.url.path, "headers": headers, "body": recorded})
        try:
            latency_ms = _delay_ms(request, "x-test-latency-ms", self.latency_ms)
            chunk_delay_ms = _delay_ms(request, "x-test-chunk-delay-ms", self.chunk_delay_ms)
            if latency_ms > 0:
                await asyncio.sleep(latency_ms / 1000)
            error = _auth_error(request, self.api_key)
            if error is not None:
                return error
            if not isinstance(body, dict):
                raise _BadRequest("We could not parse the JSON body of your request.")
            model = model or body.get("model") or DEFAULT_MODEL
            if chat is None:
                return _embeddings(body, model)
            if chat:
                return self._chat(body, model, chunk_delay_ms)
            return self._completion(body, model, chunk_delay_ms)
        except _BadRequest as exc:
            return _error(400, exc.message, param=exc.param)

    def _chat(self, body: Json, model: str, chunk_delay_ms: float) -> Response:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty array.", "messages")
        prompt_tokens = 0
        user_text = ""
        for item in messages:
            if not isinstance(item, dict):
                raise _BadRequest("Each message must be an object.", "messages")
            content = _content_text(item.get("content"))
            prompt_tokens += len(content.split())
            if item.get("role") == "user":
                user_text = content

        fault = self._fault(user_text)
        if fault is not None:
            return fault
        cut = _cut(user_text)
        call = None
        if body.get("tools"):
            calls_by = "tools" if body.get("tool_choice") != "none" else None
        else:
            calls_by = "functions" if body.get("functions") and body.get("function_call") != "none" else None
        if calls_by and "[[" in user_text:
            call = _CALL_RE.search(user_text)

        n = next(self._ids)
        base = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        tool_call: Json | None = None
        function_call: Json | None = None
        text: str | None
        if call is None:
            text, pieces, finish_reason = _reply(user_text, body)
            usage = _usage(prompt_tokens, len(pieces))
        elif calls_by == "tools":
            function = {"name": call.group(1), "arguments": "{}"}
            tool_call = {"id": f"call_{call.group(1)}", "type": "function", "function": function}
            text, pieces, finish_reason = None, [], "tool_calls"
            usage = _usage(prompt_tokens, 1)
        else:
            function_call = {"name": call.group(1), "arguments": "{}"}
            text, pieces, finish_reason = None, [], "function_call"
            usage = _usage(prompt_tokens, 1)

        if not body.get("stream"):
            message: Json = {"role": "assistant", "content": text}
            if tool_call is not None:
                message["tool_calls"] = [tool_call]
            if function_call is not None:
                message["function_call"] = function_call
            choice = {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason,
                "logprobs": None,
            }
            return _whole({**base, "choices": [choice], "usage": usage}, cut)

        include_usage = _include_usage(body)
        base["object"] = "chat.completion.chunk"

        def chunk(delta: Json, finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data = {**base, "choices": [choice]}
            if include_usage:
                data["usage"] = None
            return _sse(data)

        if tool_call is not None:
            head = {**tool_call, "index": 0, "function": {**tool_call["function"], "arguments": ""}}
            frames = [
                chunk({"role": "assistant", "content": None, "tool_calls": [head]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            ]
        elif function_call is not None:
            frames = [
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "function_call": {**function_call, "arguments": ""},
                    }
                ),
                chunk({"function_call": {"arguments": "{}"}}),
            ]
        else:
            frames = [chunk({"role": "assistant", "content": ""})]
            frames += [chunk({"content": piece}) for piece in pieces]
        frames.append(chunk({}, finish_reason))
        if include_usage:
            frames.append(_sse({**base, "choices": [], "usage": usage}))
        frames.append(_DONE)
        return _stream(frames, chunk_delay_ms, cut)

    def _completion(self, body: Json, model: str, chunk_delay_ms: float) -> Response:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _BadRequest("'prompt' must be a string or an array of strings.", "prompt")

        fault = self._fault(prompt)
        if fault is not None:
            return fault
        cut = _cut(prompt)

        text, pieces, finish_reason = _reply(prompt, body)
        usage = _usage(len(prompt.split()), len(pieces))
        base = {
            "id": f"cmpl-{next(self._ids)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if not body.get("stream"):
            choice = {"text": text, "index": 0, "finish_reason": finish_reason, "logprobs": None}
            return _whole({**base, "choices": [choice], "usage": usage}, cut)

        include_usage = _include_usage(body)

        def chunk(piece: str, finish: str | None = None) -> bytes:
            choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}
            data = {**base, "choices": [choice]}
            if include_usage:
                data["usage"] = None
            return _sse(data)

        frames = [chunk(piece) for piece in pieces]
        frames.append(chunk("", finish_reason))
        if include_usage:
            frames.append(_sse({**base, "choices": [], "usage": usage}))
        frames.append(_DONE)
        return _stream(frames, chunk_delay_ms, cut)


MAX_EMBEDDING_DIMENSIONS = 64


def _embedding(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest() * 2
    return [byte / 256 for byte in digest[:dimensions]]


def _embeddings(body: Json, model: str) -> Response:
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise _BadRequest("'input' must be a string or a non-empty array of strings.", "input")
    dimensions = body.get("dimensions", 8)
    if (
        not isinstance(dimensions, int)
        or isinstance(dimensions, bool)
        or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS
    ):
        raise _BadRequest(
            f"dimensions must be an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}.", "dimensions"
        )
    base64_format = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector: Any = _embedding(text, dimensions)
        if base64_format:
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(t.split()) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _json({"object": "list", "data": data, "model": model, "usage": usage})


def _cut(text: str) -> int | None:
    match = _CUT_RE.search(text) if "[[" in text else None
    return int(match.group(1)) if match else None


def _whole(data: Json, cut: int | None) -> Response:
    """A JSON answer; with ``cut``, only its first half is sent before the connection breaks."""
    if cut is None:
        return _json(data)
    body = orjson.dumps(data)
    half = len(body) // 2
    return _CutResponse([body[:half], body[half:]], 1, "application/json")


def create_app(latency_ms: float = 0.0, chunk_delay_ms: float = 0.0, api_key: str | None = None) -> Starlette:
    """Create the test LLM server app; ``api_key=None`` accepts any non-empty key."""
    upstream = _Upstream(latency_ms, chunk_delay_ms, api_key)
    post = ["POST"]
    routes = [
        Route("/v1/chat/completions", upstream.chat, methods=post),
        Route("/v1/completions", upstream.completions, methods=post),
        Route("/openai/deployments/{deployment}/chat/completions", upstream.azure_chat, methods=post),
        Route(
            "/openai/deployments/{deployment}/completions",
            upstream.azure_completions,
            methods=post,
        ),
        Route("/v1/embeddings", upstream.embeddings, methods=post),
        Route("/openai/deployments/{deployment}/embeddings", upstream.azure_embeddings, methods=post),
        Route("/v1/models", upstream.models, methods=["GET"]),
        Route("/health", upstream.health, methods=["GET"]),
        Route("/_requests", upstream.list_requests, methods=["GET"]),
        Route("/_requests", upstream.clear_requests, methods=["DELETE"]),
    ]
    return Starlette(routes=routes)


class LLMServer(ThreadedServer):
    """Serve the test LLM server from a background thread on a free port.

    ``with LLMServer() as server: OpenAI(base_url=server.base_url, api_key="x")``.
    """

    def __init__(
        self,
        latency_ms: float = 0.0,
        chunk_delay_ms: float = 0.0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(create_app(latency_ms, chunk_delay_ms, api_key), host, port, tls=tls)

    @property
    def base_url(self) -> str:
        """OpenAI base URL: ``url + "/v1"``."""
        return self.url + "/v1"


def serve(
    host: str,
    port: int,
    latency_ms: float,
    chunk_delay_ms: float = 0.0,
    api_key: str | None = None,
) -> None:
    """Run the test LLM server in the foreground until interrupted."""
    app = create_app(latency_ms, chunk_delay_ms, api_key)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Offline OpenAI-compatible test LLM server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    serve(args.host, args.port, args.latency_ms, args.chunk_delay_ms, args.api_key)
