"""``log_metric``: aggregation nodes report run metrics through it."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_sink: ContextVar[dict[str, Any] | None] = ContextVar("flowport_metrics", default=None)


def log_metric(key: str, value: Any, variant_id: str | None = None) -> None:
    """Record a metric of the current run (the last value for a key wins).

    Only aggregation nodes log metrics; elsewhere the call is ignored, as in prompt flow.
    """
    sink = _sink.get()
    if sink is not None:
        sink[key if variant_id is None else f"{key}.{variant_id}"] = value


def collect_metrics(sink: dict[str, Any]) -> Any:
    """Route ``log_metric`` calls in this context into ``sink``; returns a reset token."""
    return _sink.set(sink)


def stop_collecting(token: Any) -> None:
    _sink.reset(token)
