"""The ``@tool`` decorator: marks a function as a flow tool and leaves it unchanged."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])
TOOL_MARK = "__flowport_tool__"
_FOREIGN_MARKS = ("__tool", "_ToolProvider__tool", "__original_function")


@overload
def tool(func: F) -> F: ...
@overload
def tool(
    func: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    type: str | None = None,
    **kwargs: Any,
) -> Callable[[F], F]: ...


def tool(func: Any = None, **options: Any) -> Any:
    """Use as ``@tool`` or ``@tool(name=..., description=...)``."""

    def mark(f: F) -> F:
        setattr(f, TOOL_MARK, dict(options))
        return f

    return mark(func) if func is not None else mark


def is_tool(obj: Any) -> bool:
    """True for functions marked by flowport's or prompt flow's ``@tool``."""
    return callable(obj) and (hasattr(obj, TOOL_MARK) or any(hasattr(obj, m) for m in _FOREIGN_MARKS))


class ToolProvider:
    """Base of class-based tools (prompt flow's ``ToolProvider``): the parameters of ``__init__``
    are node inputs given once, when the flow loads; the ``@tool`` methods run per line."""

    def __init__(self) -> None:
        pass

    @classmethod
    def get_initialize_inputs(cls) -> dict[str, inspect.Parameter]:
        return {k: v for k, v in inspect.signature(cls.__init__).parameters.items() if k != "self"}

    @classmethod
    def get_required_initialize_inputs(cls) -> dict[str, inspect.Parameter]:
        return {k: v for k, v in cls.get_initialize_inputs().items() if v.default is inspect.Parameter.empty}
