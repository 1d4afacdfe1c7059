"""The last hour of one deployment, minute by minute: requests by status and latency percentiles.

What the web studio's monitoring charts draw. Each minute keeps counts per status and a
fixed-bucket latency histogram; percentiles are interpolated inside the bucket they fall in.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from datetime import UTC, datetime
from typing import Any

MINUTES = 60
BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)
"""Upper bounds of the latency buckets; one more bucket holds everything slower."""


class _Minute:
    __slots__ = ("buckets", "max_ms", "minute", "mirrored", "statuses")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS_MS) + 1)
        self.max_ms = 0.0
        self.mirrored = 0


def percentile(buckets: list[int], max_ms: float, fraction: float) -> float | None:
    """The latency below which ``fraction`` of the requests fall, interpolated in its bucket."""
    total = sum(buckets)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = BUCKETS_MS[index - 1] if index else 0.0
            high = min(BUCKETS_MS[index], max_ms) if index < len(BUCKETS_MS) else max_ms
            high = max(high, low)
            return round(low + (high - low) * (rank - seen) / count, 3)
        seen += count
    return round(max_ms, 3)


class MinuteStats:
    """A ring of the last 60 minutes; slots of older minutes are reused."""

    def __init__(self) -> None:
        self._slots: list[_Minute] = [_Minute(-1) for _ in range(MINUTES)]

    def _slot(self, now: float) -> _Minute:
        minute = int(now // 60)
        slot = self._slots[minute % MINUTES]
        if slot.minute != minute:
            slot = self._slots[minute % MINUTES] = _Minute(minute)
        return slot

    def record(self, status: int, seconds: float, now: float | None = None) -> None:
        slot = self._slot(time.time() if now is None else now)
        slot.statuses[status] = slot.statuses.get(status, 0) + 1
        ms = seconds * 1000
        slot.buckets[bisect_left(BUCKETS_MS, ms)] += 1
        if ms > slot.max_ms:
            slot.max_ms = ms

    def record_mirror(self, now: float | None = None) -> None:
        self._slot(time.time() if now is None else now).mirrored += 1

    def series(self, now: float | None = None) -> list[dict[str, Any]]:
        """One entry per minute, oldest first, ending with the current minute."""
        current = int((time.time() if now is None else now) // 60)
        entries = []
        for minute in range(current - MINUTES + 1, current + 1):
            slot = self._slots[minute % MINUTES]
            if slot.minute != minute:
                slot = _Minute(minute)
            entries.append(
                {
                    "time": datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "requests": {str(status): count for status, count in sorted(slot.statuses.items())},
                    "total": sum(slot.statuses.values()),
                    "mirrored": slot.mirrored,
                    "latency_ms": {
                        "p50": percentile(slot.buckets, slot.max_ms, 0.50),
                        "p90": percentile(slot.buckets, slot.max_ms, 0.90),
                        "p99": percentile(slot.buckets, slot.max_ms, 0.99),
                    },
                }
            )
        return entries
