"""``promptflow.tracing``: ``trace`` leaves functions as they are; flowport traces nodes itself."""

from collections.abc import Callable
from typing import Any


def trace(func: Callable[..., Any] | None = None, **_: Any) -> Any:
    return func if func is not None else (lambda f: f)


def start_trace(*_: Any, **__: Any) -> None:
    """Tracing is configured through flowport, not from flow code."""


__all__ = ["start_trace", "trace"]
