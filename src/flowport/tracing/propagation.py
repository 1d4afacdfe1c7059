"""W3C ``traceparent``: read a caller's (a client's, or the gateway's) and write one for the next hop.

Hand-written: the gateway reads and writes one header per request and needs neither baggage
nor ``tracestate``. The sampled flag is read (a parent's decision, followed by an instance:
``sampling.py``) and written (``01`` when this hop's span is being recorded).
"""

from __future__ import annotations

from flowport.tracing.spans import Parent

HEADER = "traceparent"
_HEX = frozenset("0123456789abcdef")


def parse(value: str | bytes | None) -> Parent | None:
    """The remote parent a ``traceparent`` value names, or None when absent or invalid."""
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
    return Parent(trace_number, span_number, bool(int(flags, 16) & 1), remote=True)


def traceparent(span: Parent) -> str:
    """The ``traceparent`` value that makes the next hop's spans children of ``span``."""
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{'01' if span.sampled else '00'}"
