"""Tools from packages installed in the flow's Python environment, found as prompt flow finds them.

A tool package registers a function under the ``package_tools`` entry point group. Called, it
returns ``{tool id: spec}``; a spec names the tool's ``module``, its ``function`` (a method of
``class_name`` for a class-based tool, whose ``__init__`` inputs the node gives once), its
``type`` (``python``, or ``custom_llm`` for a ``package_with_prompt`` node) and its ``inputs``
(``{name: {type: [string | int | double | bool | list | object | <Connection class>]}}``), which
decide how a node's literal inputs are converted. The rest of a spec (``enabled_by``,
``default``, ``dynamic_list``, icons ...) is for prompt flow's editors: it does not change a run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PACKAGE_TOOLS_GROUP = "package_tools"
INPUT_TYPES = {
    "string": "str",
    "int": "int",
    "double": "float",
    "bool": "bool",
    "list": "list",
    "object": "object",
}
"""prompt flow's input type names, as the annotations literal conversion reads."""


class PackageToolError(Exception):
    """A package tool that cannot be found or loaded; ``code`` is prompt flow's error code."""

    def __init__(self, message: str, code: str = "PackageToolNotFoundError") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class InstalledTool:
    identifier: str
    package: str
    """The distribution that registered it (``pip install`` name)."""
    spec: Mapping[str, Any]

    @property
    def class_name(self) -> str | None:
        name = self.spec.get("class_name")
        return str(name) if name else None

    def _types(self, name: str) -> list[str]:
        types = ((self.spec.get("inputs") or {}).get(name) or {}).get("type") or []
        return [str(t) for t in types] if isinstance(types, list) else []

    def connection_types(self, name: str) -> list[str]:
        """The connection classes a spec input takes (empty when it takes no connection)."""
        types = self._types(name)
        return types if types and types[0].endswith("Connection") else []

    def input_annotation(self, name: str) -> str | None:
        """The annotation a spec input's first type stands for (None when the spec says nothing)."""
        types = self._types(name)
        first = types[0] if types else None
        if first in INPUT_TYPES:
            return INPUT_TYPES[first]
        return first if first is not None and first.endswith("Connection") else None

    @property
    def input_names(self) -> set[str]:
        return set(self.spec.get("inputs") or {})

    def load(self) -> Any:
        """The tool's function, or for a class-based tool its class."""
        module_name = str(self.spec.get("module") or "")
        function = str(self.spec.get("function") or "")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PackageToolError(
                f"package tool {self.identifier!r} (package {self.package!r}): importing module "
                f"{module_name!r} failed: ({type(exc).__name__}) {exc}",
                "ToolLoadError",
            ) from exc
        owner = getattr(module, self.class_name, None) if self.class_name else module
        target = owner if self.class_name else getattr(module, function, None)
        if owner is None or not callable(getattr(owner, function, None) if self.class_name else target):
            where = f"{module_name}.{self.class_name}" if self.class_name else module_name
            raise PackageToolError(
                f"package tool {self.identifier!r} (package {self.package!r}): {where} has no "
                f"function {function!r}; the package's tool list does not match its code",
                "ToolLoadError",
            )
        return target


class InstalledTools:
    """The tool packages of this interpreter, listed once (on the first lookup)."""

    def __init__(self) -> None:
        self._tools: dict[str, InstalledTool] | None = None
        self._broken: list[str] = []

    def _list(self) -> dict[str, InstalledTool]:
        if self._tools is not None:
            return self._tools
        tools: dict[str, InstalledTool] = {}
        for entry_point in importlib.metadata.entry_points(group=PACKAGE_TOOLS_GROUP):
            dist = getattr(entry_point, "dist", None)
            package = dist.metadata["Name"] if dist is not None else entry_point.value.split(".")[0]
            try:
                listed = entry_point.load()()
                if not isinstance(listed, Mapping):
                    raise TypeError(f"it returned {type(listed).__name__}, not a mapping of tool specs")
            except Exception as exc:
                self._broken.append(f"{package} ({entry_point.value}: ({type(exc).__name__}) {exc})")
                continue
            for identifier, spec in listed.items():
                if isinstance(spec, Mapping):
                    tools.setdefault(str(identifier), InstalledTool(str(identifier), package, dict(spec)))
        for tool in list(tools.values()):  # old ids a package still answers to
            for old in tool.spec.get("deprecated_tools") or ():
                tools.setdefault(str(old), tool)
        self._tools = tools
        return tools

    def find(self, identifier: str) -> InstalledTool:
        """The tool registered as ``identifier``; PackageToolError naming the fix when none is."""
        tools = self._list()
        if identifier in tools:
            return tools[identifier]
        packages = sorted({tool.package for tool in tools.values()})
        listed = (
            f"tool packages installed: {', '.join(packages)}" if packages else "no tool package is installed"
        )
        broken = f"; these failed to list their tools: {'; '.join(self._broken)}" if self._broken else ""
        module = identifier.split(".", 1)[0]
        raise PackageToolError(
            f"package tool {identifier!r} is not installed in the Python environment the flow runs in "
            f"({sys.prefix}; {listed}{broken}). Install the package that provides it (module "
            f"{module!r}): list it in the flow's requirements.txt for model create and deployments, "
            "or pip install it into this environment for flow test and flow serve"
        )
