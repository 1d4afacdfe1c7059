"""A node's tool, compiled once: the function, how to call it, and its parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class CallMode(StrEnum):
    ASYNC = "async"
    """A coroutine function (or async generator): awaited on the event loop."""
    THREAD = "thread"
    """User code that may block: run in the executor's thread pool."""
    INLINE = "inline"
    """Cheap, non-blocking work of flowport's own (template rendering): run on the loop."""


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any = inspect.Parameter.empty
    default: Any = inspect.Parameter.empty

    @property
    def has_default(self) -> bool:
        return self.default is not inspect.Parameter.empty


@dataclass(frozen=True)
class ToolCallable:
    func: Callable[..., Any]
    mode: CallMode
    params: dict[str, Param] = field(default_factory=dict)
    accepts_any: bool = False
    """The function takes ``**kwargs``: every node input is passed."""
    streams: bool = False
    """The tool takes ``stream=True`` to return an iterator of text chunks."""
    init_inputs: frozenset[str] = frozenset()
    """Node inputs a class-based tool took in ``__init__`` when it loaded: not passed per line."""

    @classmethod
    def from_function(cls, func: Callable[..., Any], mode: CallMode | None = None) -> ToolCallable:
        signature = inspect.signature(func)
        params = {
            name: Param(name, p.annotation, p.default)
            for name, p in signature.parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if mode is None:
            is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
            mode = CallMode.ASYNC if is_async else CallMode.THREAD
        return cls(func=func, mode=mode, params=params, accepts_any=accepts_any)
