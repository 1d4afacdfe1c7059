"""Server-sent events as prompt flow frames them: ``data: <json>\\n\\n``, Python's separators."""

from __future__ import annotations

import json
from typing import Any

from flowport.engine import PFBytes, base64_reference


def image_default(value: Any) -> Any:
    """JSON for what the encoder does not know: an image is ``{"data:image/png;base64": ...}``, as
    ``pf flow serve`` answers it."""
    if isinstance(value, PFBytes):
        return base64_reference(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def frame(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, default=image_default).encode() + b"\n\n"


def error_frame(error: dict[str, Any]) -> bytes:
    """The last frame of a stream that failed midway: ``error`` is ``{"code", "message"}``."""
    return b"event: error\ndata: " + json.dumps({"error": error}).encode() + b"\n\n"
