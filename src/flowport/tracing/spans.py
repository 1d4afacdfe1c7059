"""The request path's side of tracing: start a span, mark it failed, carry it in the context.

The tracer is a module-level slot that ``setup.configure`` fills. With it empty, ``start``
returns None and callers skip the rest, so tracing off costs one check per span.
"""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

CONTENT_LIMIT = 32 * 1024
"""Characters of one input, output or message list kept on a span."""


class _State:
    tracer: Tracer | None = None
    content: bool = False


STATE = _State()


def install(tracer: Tracer | None, content: bool = False) -> None:
    """Trace with ``tracer`` from now on (None: stop); ``content``: keep inputs, outputs, messages."""
    STATE.tracer = tracer
    STATE.content = content


def enabled() -> bool:
    return STATE.tracer is not None


def capture_content() -> bool:
    """Whether spans may carry inputs, outputs and LLM messages (the deployment opted in)."""
    return STATE.content


def start(
    name: str,
    attributes: dict[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
) -> Span | None:
    """A started span, child of ``parent`` (else of the current span); None when not tracing."""
    tracer = STATE.tracer
    if tracer is None:
        return None
    return tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def fail(span: Span, exc: BaseException | None, message: str | None = None) -> None:
    """The span ends in error: an ``exception`` event (when there is one) and the ERROR status."""
    if exc is not None:
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, message if message is not None else str(exc)))


def activate(span: Span) -> object:
    """Make ``span`` the current span (its children's parent); returns the token for ``deactivate``."""
    return otel_context.attach(trace.set_span_in_context(span))


def deactivate(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]


def content(value: Any) -> str:
    """A value as a span attribute: its JSON, cut at ``CONTENT_LIMIT``."""
    try:
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "..."
