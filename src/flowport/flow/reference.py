"""Value bindings: how a node input or flow output gets its value.

prompt flow's rule: a string of the whole form ``${...}`` is a reference, anything else
is a literal. ``${inputs.x}`` / ``${flow.x}`` name a flow input; ``${node}``,
``${node.output}`` and ``${node.output.<property>}`` name a node's output, where the
property is a path of names, ``['key']`` and ``[0]`` parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FLOW_INPUT_PREFIXES = ("inputs.", "flow.")
_PROPERTY_PART = re.compile(r"(\w+)|(\[\s*'.*?'\s*\])|(\[\s*\".*?\"\s*\])|(\[\s*-?\d+\s*\])")

PathPart = str | int


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any

    def describe(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, slots=True)
class InputRef:
    name: str

    def describe(self) -> str:
        return f"${{inputs.{self.name}}}"


@dataclass(frozen=True, slots=True)
class NodeRef:
    node: str
    section: str
    property: str
    path: tuple[PathPart, ...]

    def describe(self) -> str:
        tail = f".{self.property}" if self.property else ""
        return f"${{{self.node}.{self.section}{tail}}}"


Binding = Literal | InputRef | NodeRef


class PropertyError(ValueError):
    """A property path does not parse."""


def parse_property(prop: str) -> tuple[PathPart, ...]:
    """Split ``a.b['k'][0]`` into ``("a", "b", "k", 0)``."""
    parts: list[PathPart] = []
    for match in _PROPERTY_PART.finditer(prop):
        name, single, double, index = match.groups()
        if name is not None:
            parts.append(name)
        elif index is not None:
            parts.append(int(index.strip()[1:-1]))
        else:
            parts.append((single or double).strip()[2:-2])
    return tuple(parts)


def parse_binding(value: Any) -> Binding:
    """Turn a raw YAML value into a binding, exactly as prompt flow reads it."""
    if not (isinstance(value, str) and value.startswith("${") and value.endswith("}")):
        return Literal(value)
    inner = value[2:-1]
    for prefix in FLOW_INPUT_PREFIXES:
        if inner.startswith(prefix):
            return InputRef(inner[len(prefix) :])
    if "." not in inner:
        return NodeRef(inner, "output", "", ())
    node, section = inner.split(".", 1)
    prop = ""
    if "." in section:
        section, prop = section.split(".", 1)
    return NodeRef(node, section, prop, parse_property(prop))


def resolve_path(value: Any, path: tuple[PathPart, ...]) -> Any:
    """Follow a property path into a value: dict keys, list indexes, then attributes."""
    for part in path:
        value = value[part] if isinstance(part, int) or isinstance(value, dict) else getattr(value, part)
    return value
