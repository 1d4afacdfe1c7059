"""The parsed flow definition: plain immutable data, no behaviour beyond lookups."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from flowport.flow.reference import Binding, Literal


class ValueType(StrEnum):
    INT = "int"
    DOUBLE = "double"
    BOOL = "bool"
    STRING = "string"
    LIST = "list"
    OBJECT = "object"
    IMAGE = "image"


class Missing:
    """Marks an input without a default."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = Missing()

NODE_TYPES = ("python", "prompt", "llm", "custom_llm")


@dataclass(frozen=True)
class InputDef:
    name: str
    type: ValueType
    default: Any = MISSING
    description: str | None = None
    enum: tuple[Any, ...] | None = None
    is_chat_input: bool = False
    is_chat_history: bool = False
    line: int | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING


@dataclass(frozen=True)
class OutputDef:
    name: str
    reference: Binding
    type: ValueType = ValueType.STRING
    description: str | None = None
    is_chat_output: bool = False
    evaluation_only: bool = False
    line: int | None = None


@dataclass(frozen=True)
class Activate:
    when: Binding
    is_: Any


@dataclass(frozen=True)
class NodeDef:
    name: str
    type: str
    source_type: str | None = None
    source_path: str | None = None
    source_tool: str | None = None
    inputs: dict[str, Binding] = field(default_factory=dict)
    connection: str | None = None
    api: str | None = None
    provider: str | None = None
    module: str | None = None
    activate: Activate | None = None
    aggregation: bool = False
    enable_cache: bool = False
    variant_id: str | None = None
    line: int | None = None
    input_lines: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowDef:
    """A flow folder as written, variants already resolved to one node each."""

    path: Path
    file: Path
    inputs: dict[str, InputDef]
    outputs: dict[str, OutputDef]
    nodes: dict[str, NodeDef]
    environment: dict[str, Any] = field(default_factory=dict)
    environment_variables: dict[str, Any] = field(default_factory=dict)
    additional_includes: tuple[str, ...] = ()
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_chat(self) -> bool:
        return any(i.is_chat_input for i in self.inputs.values())

    @property
    def chat_input(self) -> str | None:
        return next((i.name for i in self.inputs.values() if i.is_chat_input), None)

    @property
    def chat_history(self) -> str | None:
        return next((i.name for i in self.inputs.values() if i.is_chat_history), None)

    @property
    def chat_output(self) -> str | None:
        return next((o.name for o in self.outputs.values() if o.is_chat_output), None)

    @property
    def chat_history_format(self) -> str:
        """``turns`` (prompt flow's ``{"inputs", "outputs"}`` pairs) or ``messages`` (a prompty's
        OpenAI ``{"role", "content"}`` messages): what the chat history input holds."""
        return str((self.raw.get("flowport.flex") or {}).get("chat_history_format") or "turns")

    def connection_candidates(self) -> set[str]:
        """Every name that may be a connection: node ``connection`` fields and literal string
        inputs (a Python tool's connection parameter is a literal name) and the flow's variables."""
        names = {str(v) for v in self.environment_variables.values() if isinstance(v, str)}
        names.update((self.raw.get("flowport.flex") or {}).get("connection_names") or ())
        for node in self.nodes.values():
            if node.connection:
                names.add(node.connection)
            names.update(
                b.value for b in node.inputs.values() if isinstance(b, Literal) and isinstance(b.value, str)
            )
        return names
