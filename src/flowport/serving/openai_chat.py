"""``POST /v1/chat/completions``: a chat flow behind the OpenAI chat API.

Messages map to the flow's chat history (user/assistant pairs, or for a chat prompty the
messages themselves) and chat input (the last user message); the chat output is the assistant's
answer. ``stream: true`` answers with
OpenAI's chunk events, so any OpenAI client can talk to a deployed chat flow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from flowport.engine import LineResult, NodeStream
from flowport.engine.streams import join_async
from flowport.serving.body import BodyTooLarge
from flowport.serving.refused import Refused, status_for

if TYPE_CHECKING:
    from flowport.serving.app import ScoringApp


class ChatRequestError(ValueError):
    pass


_REFUSALS = {429: ("rate_limit_exceeded", "requests"), 408: ("timeout", "invalid_request_error")}
"""OpenAI's error code and type for the statuses that are not the flow's own errors."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _error(message: str, status: int, code: str, error_type: str = "invalid_request_error") -> Response:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error_type(status: int) -> str:
    return "server_error" if status >= 500 else "invalid_request_error"


def not_a_chat_flow(scoring: ScoringApp) -> Callable[[Request], Awaitable[Response]]:
    """``/v1/chat/completions`` of a flow that is not a chat flow: OpenAI's 400, saying why."""
    message = (
        f"flow {scoring.name!r} is not a chat flow, so it cannot answer chat completions. A chat flow "
        "marks the user's message input with 'is_chat_input: true', a list input with "
        "'is_chat_history: true' and the answer output with 'is_chat_output: true' in flow.dag.yaml "
        "(a chat .prompty: api chat, a list input 'chat_history' and a string input 'question', or those "
        "markers on its inputs). Call this endpoint's /score route with the flow's inputs instead."
    )

    async def refuse(request: Request) -> Response:
        with contextlib.suppress(BodyTooLarge):
            await scoring.read_body(request)  # drained, so the connection stays usable
        return _error(message, 400, "not_a_chat_flow")

    return refuse


class OpenAIChatRoute:
    def __init__(self, scoring: ScoringApp) -> None:
        self.scoring = scoring
        flow = scoring.flow
        self.chat_input = flow.chat_input or ""
        self.chat_history = flow.chat_history
        self.chat_output = flow.chat_output or next(iter(flow.outputs), "output")
        self.other_inputs = set(flow.inputs) - {self.chat_input, self.chat_history}
        self.history_messages = flow.chat_history_format == "messages"
        """A prompty's history is the OpenAI messages themselves, not the flow's turns."""

    def to_inputs(self, body: Any) -> dict[str, Any]:
        """The flow inputs an OpenAI chat request stands for."""
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise ChatRequestError("'messages' must be a non-empty list of chat messages")
        turns = [
            m for m in body["messages"] if isinstance(m, dict) and m.get("role") in ("user", "assistant")
        ]
        if not turns or turns[-1].get("role") != "user":
            raise ChatRequestError("the last message must come from the user")
        history: list[dict[str, Any]] = []
        pending: str | None = None
        if self.history_messages:
            history = [{"role": m["role"], "content": _text(m.get("content"))} for m in turns[:-1]]
            turns = turns[-1:]
        for message in turns[:-1]:
            if message["role"] == "user":
                pending = _text(message.get("content"))
            elif pending is not None:
                history.append(
                    {
                        "inputs": {self.chat_input: pending},
                        "outputs": {self.chat_output: _text(message.get("content"))},
                    }
                )
                pending = None
        inputs: dict[str, Any] = {self.chat_input: _text(turns[-1].get("content"))}
        if self.chat_history:
            inputs[self.chat_history] = history
        for key in self.other_inputs & body.keys():
            inputs[key] = body[key]
        return inputs

    async def handle(self, request: Request) -> Response:
        scoring = self.scoring
        started = time.perf_counter()
        headers = scoring.request_headers(request)
        request_id = headers["x-request-id"]
        try:
            body = orjson.loads(await scoring.read_body(request))
            inputs = self.to_inputs(body)
        except orjson.JSONDecodeError:
            return _error("the request body is not valid JSON", 400, "invalid_json")
        except ChatRequestError as exc:
            return _error(str(exc), 400, "invalid_messages")
        except BodyTooLarge:
            return _error(scoring.too_large().message, 413, "request_too_large")
        model = str(body.get("model") or scoring.name)
        stream = bool(body.get("stream"))
        try:
            result = await scoring.execute(inputs, stream, request_id, headers)
        except Refused as refused:
            code, error_type = _REFUSALS.get(refused.status, (None, "invalid_request_error"))
            error = refused.error
            return _error(error.message, refused.status, code or error.inner_code or error.code, error_type)
        answer = result.outputs.get(self.chat_output)
        if stream:
            return StreamingResponse(
                self._chunks(answer, result, model, request_id, started),
                media_type="text/event-stream",
                headers=headers,
            )
        try:
            text = await join_async(answer)
        except Exception as exc:  # the answer's stream broke off
            error = scoring.stream_failed(exc)
            status = status_for(error)
            scoring.finish_request("chat", status, started, request_id, result)
            return _error(error.message, status, error.inner_code or error.code, _error_type(status))
        finally:
            await scoring.limit.__aexit__()
        scoring.metrics.observe_run(result.run)
        scoring.finish_request("chat", 200, started, request_id, result)
        usage = result.run.usage
        payload = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "" if text is None else str(text)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage.to_dict(),
        }
        return Response(orjson.dumps(payload), 200, headers, media_type="application/json")

    async def _chunks(
        self, answer: Any, result: LineResult, model: str, request_id: str, started: float
    ) -> AsyncIterator[bytes]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {
                "id": f"chatcmpl-{request_id}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        status = 200
        try:
            yield chunk({"role": "assistant", "content": ""})
            self.scoring.metrics.latency.labels("chat", "first").observe(time.perf_counter() - started)
            if isinstance(answer, NodeStream):
                async for piece in answer:
                    yield chunk({"content": piece})
            elif answer is not None:
                yield chunk({"content": str(answer)})
            yield chunk({}, "stop")
            yield b"data: [DONE]\n\n"
            self.scoring.metrics.observe_run(result.run)
        except Exception as exc:  # broke off midway: OpenAI's error event ends the stream, no [DONE]
            error = self.scoring.stream_failed(exc)
            status = status_for(error)
            body = {"message": error.message, "type": _error_type(status), "param": None}
            yield (
                b"data: "
                + orjson.dumps({"error": {**body, "code": error.inner_code or error.code}})
                + b"\n\n"
            )
        finally:
            await self.scoring.limit.__aexit__()
            self.scoring.finish_request("chat", status, started, request_id, result, streamed=True)
