"""W3C ``traceparent``: read a caller's (a client's, or the gateway's) and write one for the next hop.

Hand-written: the gateway reads and writes one header per request and needs neither baggage
nor ``tracestate``. The sampled flag is read (a parent's decision, followed by an instance:
``sampling.py``) and written (``01`` when this hop's span is being recorded).
"""

from __future__ import annotations

import re

from flowport.tracing.spans import Parent

HEADER = "traceparent"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S)
"""Version, trace id, parent id, flags; a later version may add fields after a dash."""


def parse(value: str | bytes | None) -> Parent | None:
    """The remote parent a ``traceparent`` value names, or None when absent or invalid."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_number, span_number = int(trace_id, 16), int(span_id, 16)
    if not trace_number or not span_number:
        return None
    return Parent(trace_number, span_number, bool(int(flags, 16) & 1), remote=True)


def traceparent(span: Parent) -> str:
    """The ``traceparent`` value that makes the next hop's spans children of ``span``."""
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{'01' if span.sampled else '00'}"
