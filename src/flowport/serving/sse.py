"""Server-sent events as prompt flow frames them: ``data: <json>\\n\\n``, Python's separators."""

from __future__ import annotations

import json
from typing import Any


def frame(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def error_frame(error: dict[str, Any]) -> bytes:
    """The last frame of a stream that failed midway: ``error`` is ``{"code", "message"}``."""
    return b"event: error\ndata: " + json.dumps({"error": error}).encode() + b"\n\n"
