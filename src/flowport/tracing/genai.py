"""LLM call spans in OpenTelemetry's GenAI semantic conventions (``gen_ai.*``).

One span per API call: ``{operation} {model}``, kind CLIENT, with the request's model and
parameters, the answer's id, model, finish reasons and token usage; the messages only when the
process captures content. A streamed answer's span ends with its last chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from flowport.tracing import spans
from flowport.tracing.spans import CLIENT, Span

OPERATIONS = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}
_REQUEST_PARAMETERS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "seed": "gen_ai.request.seed",
}


def start_call(path: str, body: Mapping[str, Any], provider: str, host: str, port: int | None) -> Span | None:
    """The span of one API call to ``path`` with ``body``; None when not tracing."""
    if not spans.enabled():
        return None
    operation = OPERATIONS.get(path, path)
    model = str(body.get("model") or "")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "server.address": host,
    }
    if port is not None:
        attributes["server.port"] = port
    for key, name in _REQUEST_PARAMETERS.items():
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    if spans.capture_content():
        given = body.get("messages", body.get("prompt", body.get("input")))
        if given is not None:
            attributes["gen_ai.input.messages"] = spans.content(given)
    return spans.start(f"{operation} {model}".strip(), attributes, CLIENT)


def _usage(span: Span, usage: Any) -> None:
    if isinstance(usage, dict):
        if isinstance(usage.get("prompt_tokens"), int):
            span.set_attribute("gen_ai.usage.input_tokens", usage["prompt_tokens"])
        if isinstance(usage.get("completion_tokens"), int):
            span.set_attribute("gen_ai.usage.output_tokens", usage["completion_tokens"])


def end_call(span: Span, answer: Mapping[str, Any]) -> None:
    """Close the span with what a whole (JSON) answer says."""
    if isinstance(answer.get("id"), str):
        span.set_attribute("gen_ai.response.id", answer["id"])
    if isinstance(answer.get("model"), str):
        span.set_attribute("gen_ai.response.model", answer["model"])
    choices = answer.get("choices")
    if isinstance(choices, list):
        reasons = [
            str(c.get("finish_reason")) for c in choices if isinstance(c, dict) and c.get("finish_reason")
        ]
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
        if spans.capture_content():
            outputs = [c.get("message", c.get("text")) for c in choices if isinstance(c, dict)]
            span.set_attribute("gen_ai.output.messages", spans.content(outputs))
    _usage(span, answer.get("usage"))
    span.end()


def failed_call(span: Span, exc: BaseException) -> None:
    span.set_attribute("error.type", str(getattr(exc, "name", None) or type(exc).__name__))
    spans.fail(span, exc)
    span.end()


async def traced_stream(span: Span, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed answer, unchanged; the span ends with the stream."""
    reasons: list[str] = []
    text: list[str] = []
    keep = spans.capture_content()
    try:
        async for chunk in events:
            if isinstance(chunk, dict):
                if "id" in chunk and isinstance(chunk["id"], str):
                    span.set_attribute("gen_ai.response.id", chunk["id"])
                if isinstance(chunk.get("model"), str) and chunk["model"]:
                    span.set_attribute("gen_ai.response.model", chunk["model"])
                for choice in chunk.get("choices") or ():
                    if isinstance(choice, dict):
                        if choice.get("finish_reason"):
                            reasons.append(str(choice["finish_reason"]))
                        if keep:
                            delta = choice.get("delta")
                            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                            if isinstance(piece, str):
                                text.append(piece)
                if chunk.get("usage"):
                    _usage(span, chunk["usage"])
            yield chunk
    except BaseException as exc:
        failed_call(span, exc)
        raise
    if reasons:
        span.set_attribute("gen_ai.response.finish_reasons", reasons)
    if keep:
        span.set_attribute(
            "gen_ai.output.messages", spans.content([{"role": "assistant", "content": "".join(text)}])
        )
    span.end()
