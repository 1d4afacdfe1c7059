"""Structured JSON logs of an instance: one line per request, to stdout. No inputs, no secrets."""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson


class AccessLog:
    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout

    _second = -1
    _stamp = ""

    def _now(self) -> str:
        second = int(time.time())
        if second != self._second:  # formatted once a second, not once a request
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._stamp

    def _write(self, record: dict[str, Any]) -> None:
        record["time"] = self._now()
        try:
            self.stream.write(orjson.dumps(record).decode() + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full stdout never fails a request

    def request(self, route: str, status: int, seconds: float, request_id: str, tokens: int) -> None:
        self._write(
            {
                "level": "INFO" if status < 500 else "ERROR",
                "event": "request",
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "request_id": request_id,
                "tokens": tokens,
            }
        )

    def feedback(self, request_id: str, feedback: Any) -> None:
        self._write({"level": "INFO", "event": "feedback", "request_id": request_id, "feedback": feedback})
