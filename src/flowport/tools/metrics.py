"""``log_metric``: aggregation nodes report run metrics through it."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_sink: ContextVar[dict[str, Any] | None] = ContextVar("flowport_metrics", default=None)


def log_metric(key: str, value: float, variant_id: str | None = None) -> None:
    """Record a metric of the current run; outside a run it is ignored, as in prompt flow."""
    sink = _sink.get()
    if sink is None:
        return
    number: float = value
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {key!r} must be a number, got {value!r}") from None
    sink[key if variant_id is None else f"{key}.{variant_id}"] = number


def collect_metrics(sink: dict[str, Any]) -> Any:
    """Route ``log_metric`` calls in this context into ``sink``; returns a reset token."""
    return _sink.set(sink)


def stop_collecting(token: Any) -> None:
    _sink.reset(token)
