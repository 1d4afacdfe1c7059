"""Data collection: sampled requests and responses written as JSON lines, off the request path.

The request path only puts raw bytes on a bounded queue; one background thread parses them
and appends to ``<data_dir>/<endpoint>/<deployment>/<partition>.jsonl``. When the queue is
full or a write fails, the record is dropped and counted: collection never fails or slows a
request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from flowport.gateway.background import Background

MAX_BODY_BYTES = 1024 * 1024
"""Of a response (and a request), at most this much is kept."""
QUEUE_SIZE = 10_000

_PARTITIONS = {
    "minute": "%Y/%m/%d/%H/%M",
    "hour": "%Y/%m/%d/%H",
    "day": "%Y/%m/%d",
    "month": "%Y/%m",
    "year": "%Y",
}


def partition(rolling_rate: str, when: datetime) -> str:
    """The file a record goes to, by Azure's rolling_rate: ``Hour`` -> ``2026/11/21/14``."""
    return when.strftime(_PARTITIONS.get(rolling_rate.lower(), _PARTITIONS["hour"]))


@dataclass
class Record:
    """One sampled exchange, as the request path leaves it: nothing parsed yet."""

    request_id: str
    endpoint: str
    deployment: str
    time: float
    status: int
    latency_ms: float
    rolling_rate: str
    request: bytes | None = None
    response: bytes | None = None
    response_is_events: bool = False
    response_truncated: bool = False


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def parse_events(body: bytes) -> list[Any]:
    """The JSON payloads of ``data:`` lines of server-sent events (``[DONE]`` left out)."""
    frames = []
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data and data != b"[DONE]":
            frames.append(parse_json(data))
    return frames


def to_line(record: Record) -> tuple[str, bytes]:
    """The relative file path and the JSON line of ``record``."""
    when = datetime.fromtimestamp(record.time, UTC)
    line: dict[str, Any] = {
        "request_id": record.request_id,
        "endpoint": record.endpoint,
        "deployment": record.deployment,
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "status": record.status,
        "latency_ms": round(record.latency_ms, 3),
    }
    if record.request is not None:
        if len(record.request) > MAX_BODY_BYTES:
            line["request"] = None
            line["request_truncated"] = True
        else:
            line["request"] = parse_json(record.request) if record.request else None
    if record.response is not None:
        if record.response_is_events:
            line["response"] = parse_events(record.response)
        elif record.response_truncated:
            line["response"] = None
        else:
            line["response"] = parse_json(record.response) if record.response else None
        if record.response_truncated:
            line["response_truncated"] = True
    path = f"{record.endpoint}/{record.deployment}/{partition(record.rolling_rate, when)}.jsonl"
    return path, orjson.dumps(line) + b"\n"


class DataCollector(Background[Record]):
    """Records appended to JSON lines files by one daemon thread, started with the first record."""

    thread_name = "flowport-data-collector"

    def __init__(
        self,
        root: Path,
        on_drop: Callable[[str], None] = lambda reason: None,
        on_written: Callable[[int], None] = lambda count: None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        super().__init__(on_drop, queue_size)
        self.root = root
        self.on_written = on_written

    def _handle(self, records: list[Record]) -> None:
        files: dict[str, list[bytes]] = {}
        for record in records:
            try:
                path, line = to_line(record)
            except Exception:  # a record that cannot be encoded is dropped like a failed write
                self.on_drop("write_error")
                continue
            files.setdefault(path, []).append(line)
        for path, lines in files.items():
            target = self.root / path
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("ab") as handle:
                    handle.write(b"".join(lines))
            except OSError:
                for _ in lines:
                    self.on_drop("write_error")
                continue
            self.on_written(len(lines))
