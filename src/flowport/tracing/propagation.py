"""W3C ``traceparent``: read a caller's (a client's, or the gateway's) and write one for the next hop.

Hand-written rather than the propagator API: the gateway reads and writes one header per
request and needs neither baggage nor ``tracestate`` parsing.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

HEADER = "traceparent"
_HEX = frozenset("0123456789abcdef")


def parent_context(value: str | bytes | None) -> Context | None:
    """The context a ``traceparent`` value names (a remote parent), or None when absent or invalid."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if (
        len(version) != 2
        or version == "ff"
        or (version == "00" and len(parts) != 4)
        or len(trace_id) != 32
        or len(span_id) != 16
        or len(flags) != 2
        or not _HEX.issuperset(version + trace_id + span_id + flags)
    ):
        return None
    trace_number, span_number = int(trace_id, 16), int(span_id, 16)
    if not trace_number or not span_number:
        return None
    remote = SpanContext(
        trace_number, span_number, is_remote=True, trace_flags=TraceFlags(int(flags, 16) & 1)
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


def traceparent(span: Span) -> str:
    """The ``traceparent`` value that makes the next hop's spans children of ``span``."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
