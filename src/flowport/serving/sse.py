"""Server-sent events as prompt flow frames them: ``data: <json>\\n\\n``, Python's separators."""

from __future__ import annotations

import json
from typing import Any


def frame(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
