"""Reading back what data collection wrote: JSONL files per deployment, oldest first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson

from flowport.control.errors import ApiError


def read_records(folder: Path, since: str | None = None) -> Iterator[bytes]:
    """Every collected line under ``folder`` (one deployment), optionally from ``since`` (ISO time) on."""
    start = parse_time(since) if since else None
    if not folder.is_dir():
        return
    for file in sorted(folder.rglob("*.jsonl")):
        with file.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                if start is not None and not _after(line, start):
                    continue
                yield line if line.endswith(b"\n") else line + b"\n"


def parse_time(text: str, name: str = "since") -> datetime:
    """A query parameter's ISO time, with its zone; a 400 naming the parameter otherwise."""
    code = f"Invalid{name.title()}"
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, code, f"{name} must be an ISO time such as 2026-11-21T14:00:00Z, got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise ApiError(400, code, f"{name} must name its time zone (e.g. end with Z), got {text!r}")
    return value


def _after(line: bytes, start: datetime) -> bool:
    try:
        when = orjson.loads(line).get("time")
        return parse_time(when) >= start
    except (orjson.JSONDecodeError, ApiError, AttributeError, TypeError):
        return False
