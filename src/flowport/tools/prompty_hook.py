"""Where the ``promptflow.core.Prompty`` stand-in finds flowport's prompty loader.

``tools`` may not import the engine, so the engine registers its loader here when it loads;
flow code calling ``Prompty.load`` before any flow was loaded gets one clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_loader: Callable[..., Any] | None = None


def register(loader: Callable[..., Any]) -> None:
    global _loader
    _loader = loader


def load(source: Any, **kwargs: Any) -> Any:
    """A loaded prompty: an object whose async ``__call__(**inputs)`` answers as prompt flow does."""
    if _loader is None:
        raise RuntimeError("Prompty.load runs inside a flow run by flowport (flow test, serve, run)")
    return _loader(source, **kwargs)
