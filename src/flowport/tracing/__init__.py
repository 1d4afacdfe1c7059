"""Traces: OpenTelemetry spans for requests, lines, nodes and LLM calls (no flowport imports).

Nothing is traced until ``setup.configure`` installs a sink for ended spans; until then every
helper in ``spans`` returns at once, so a process that does not trace pays one check per span.
"""

from flowport.tracing.spans import (
    CLIENT,
    CONTENT_LIMIT,
    SERVER,
    Unrecorded,
    activate,
    begin,
    capture_content,
    content,
    deactivate,
    enabled,
    fail,
    start,
)

__all__ = [
    "CLIENT",
    "CONTENT_LIMIT",
    "SERVER",
    "Unrecorded",
    "activate",
    "begin",
    "capture_content",
    "content",
    "deactivate",
    "enabled",
    "fail",
    "start",
]
