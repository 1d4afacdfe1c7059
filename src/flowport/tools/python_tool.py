"""Python nodes: import the module once, find its ``@tool`` function."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from flowport.tools.decorator import is_tool


class ToolLoadError(Exception):
    """A tool's module cannot be imported or holds no usable function."""

    def __init__(self, message: str, code: str = "ToolLoadError") -> None:
        super().__init__(message)
        self.code = code


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"_flowport_tool_{digest}_{path.stem}"


def import_module_from_file(path: Path) -> ModuleType:
    """Import ``path`` once per process, with its folder importable for sibling modules."""
    name = _module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ToolLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        raise ToolLoadError(
            f"importing {path.name} failed at {_where(exc, path)}: ({type(exc).__name__}) {exc}"
        ) from exc
    return module


def _where(exc: BaseException, path: Path) -> str:
    """``file:line`` of the failure inside the tool's own file (a syntax error: the bad line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{Path(exc.filename).name}:{exc.lineno}"
    line = None
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == str(path):
            line = frame.tb_lineno
        frame = frame.tb_next
    return f"{path.name}:{line}" if line else path.name


def find_tool_function(module: ModuleType, path: Path, name: str | None = None) -> Callable[..., Any]:
    """The function named ``name``, else the one ``@tool`` function, else the only function."""
    if name:
        func = getattr(module, name.rsplit(".", 1)[-1], None)
        if not callable(func):
            raise ToolLoadError(f"{path.name} has no function {name!r}")
        return func
    own = [
        obj for obj in vars(module).values() if inspect.isfunction(obj) and obj.__module__ == module.__name__
    ]
    tools = [f for f in own if is_tool(f)]
    if len(tools) == 1:
        return tools[0]
    if len(tools) > 1:
        names = ", ".join(f.__name__ for f in tools)
        raise ToolLoadError(
            f"{path.name} has more than one @tool function ({names}); keep one per file",
            "MultipleToolsDefined",
        )
    if len(own) == 1:
        return own[0]
    raise ToolLoadError(
        f"{path.name} has no @tool function: decorate the node's function with @tool", "NoToolDefined"
    )
