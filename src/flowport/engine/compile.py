"""Compile a plan once: import tools, compile templates, convert literals, bind connections.

After this, running a line does no parsing, importing or lookups by name.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowport.connections import AzureOpenAIConnection, Connection
from flowport.connections.types import CONNECTION_TYPES
from flowport.engine.errors import ExecutionError, system_error, user_error
from flowport.engine.package_node import PackageToolBuilder
from flowport.flow import FlowDef, FlowError, NodePlan, Plan
from flowport.flow.reference import InputRef, Literal, NodeRef
from flowport.tools.callable import CallMode, Param, ToolCallable
from flowport.tools.chat_parser import ChatFormatError
from flowport.tools.installed_tools import InstalledTools, PackageToolError
from flowport.tools.llm import ClientPool, LLMTool, tool_parameters
from flowport.tools.package_tools import (
    PROMPT_LLM_TOOL,
    VISION_TOOLS,
    builtin_package_tool,
    prompt_llm_tool,
)
from flowport.tools.python_tool import ToolLoadError, find_tool_function, import_module_from_file
from flowport.tools.templates import TemplateError, compile_template, render, template_variables

_CONNECTION_NAMES = {cls.__name__ for cls in CONNECTION_TYPES.values()}
_ENV_REF = re.compile(r"^\$\{env:([^}]+)\}$")
_CONN_REF = re.compile(r"^\$\{([^.}]+)\.([^}]+)\}$")


@dataclass(frozen=True)
class CompiledNode:
    plan: NodePlan
    tool: ToolCallable
    literals: dict[str, Any]
    """Literal inputs, converted once to the tool's parameter types."""
    refs: tuple[tuple[str, InputRef | NodeRef], ...]
    """Inputs read from flow inputs or other nodes at run time."""
    defaults: dict[str, Any]
    """Python defaults of parameters: used when the node feeding them was bypassed."""

    @property
    def name(self) -> str:
        return self.plan.node.name


def _is_connection_type(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1] in _CONNECTION_NAMES
    if inspect.isclass(annotation) and issubclass(annotation, Connection):
        return True
    args = getattr(annotation, "__args__", None) or ()
    return any(_is_connection_type(a) for a in args)


def _annotation_name(annotation: Any) -> str | None:
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None)


def convert_literal(value: Any, param: Param | None) -> Any:
    """Convert a YAML literal to its parameter's type, as prompt flow does.

    An unannotated parameter counts as ``object``: a string holding JSON is parsed, any
    other string stays as it is. Raises ValueError when the value cannot be the type.
    """
    if param is None:
        return value
    kind = "object" if param.annotation is inspect.Parameter.empty else _annotation_name(param.annotation)
    if kind == "int" and not isinstance(value, bool):
        return int(value)
    if kind == "float" and not isinstance(value, bool):
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(value)
    if kind == "list":
        parsed = json.loads(value) if isinstance(value, str) else value
        if not isinstance(parsed, list):
            raise ValueError(value)
        return parsed
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if kind in ("object", "dict") and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def resolve_environment_variables(
    flow: FlowDef, connections: Mapping[str, Connection], environ: Mapping[str, str]
) -> dict[str, str]:
    """The flow's ``environment_variables`` with ``${env:X}`` and ``${conn.field}`` resolved."""
    resolved: dict[str, str] = {}
    for key, value in flow.environment_variables.items():
        text = "" if value is None else str(value)
        if match := _ENV_REF.match(text):
            text = environ.get(match.group(1), text)
        elif (match := _CONN_REF.match(text)) and match.group(1) in connections:
            conn = connections[match.group(1)]
            field = match.group(2)
            text = str(getattr(conn, field, "") or "")
        resolved[str(key)] = text
    return resolved


class FlowCompiler:
    """Builds CompiledNodes for every node of a plan."""

    def __init__(self, plan: Plan, connections: Mapping[str, Connection], pool: ClientPool) -> None:
        self.plan = plan
        self.flow = plan.flow
        self.connections = connections
        self.pool = pool
        self.installed = InstalledTools()

    def compile(self) -> dict[str, CompiledNode]:
        nodes = {}
        for node_plan in (*self.plan.line_nodes, *self.plan.aggregation_nodes):
            nodes[node_plan.node.name] = self.compile_node(node_plan)
        return nodes

    def _error(self, node: NodePlan, message: str, code: str, key: str | None = None) -> FlowError:
        line = node.node.input_lines.get(key, node.node.line) if key else node.node.line
        return FlowError.single(code, message, str(self.flow.file), line)

    def _source(self, node: NodePlan) -> Path:
        return self.flow.path / str(node.node.source_path)

    def compile_node(self, node: NodePlan) -> CompiledNode:
        kind = node.node.type
        if kind == "python":
            tool = self._python_tool(node)
        elif kind == "prompt":
            tool = self._prompt_tool(node)
        elif kind == "llm":
            tool = self._llm_tool(node)
        elif kind == "custom_llm":
            tool = self._custom_llm_tool(node)
        else:  # pragma: no cover - the loader rejects other types
            raise system_error(f"node type {kind!r} has no compiler")
        literals: dict[str, Any] = {}
        refs: list[tuple[str, InputRef | NodeRef]] = []
        for key, binding in node.node.inputs.items():
            if key in tool.init_inputs:
                continue
            if not isinstance(binding, Literal):
                refs.append((key, binding))
            elif binding.value is not None and binding.value != "":
                # prompt flow leaves out empty literals: the Python default applies.
                literals[key] = self._literal(node, tool, key, binding)
        defaults = {name: p.default for name, p in tool.params.items() if p.has_default}
        return CompiledNode(node, tool, literals, tuple(refs), defaults)

    def _literal(self, node: NodePlan, tool: ToolCallable, key: str, binding: Literal) -> Any:
        param = tool.params.get(key)
        if param is not None and _is_connection_type(param.annotation):
            return self._connection(node, binding.value, key)
        try:
            return convert_literal(binding.value, param)
        except (TypeError, ValueError):
            kind = _annotation_name(param.annotation) if param else "object"
            raise self._error(
                node,
                f"Input {key!r} for node {node.node.name!r} of value {binding.value!r} is not type {kind}.",
                "NodeInputValidationError",
                key,
            ) from None

    def _connection(self, node: NodePlan, name: Any, key: str | None = None) -> Connection:
        if not name:
            raise self._error(node, f"node {node.node.name!r} needs a connection", "ConnectionNotFound", key)
        try:
            return self.connections[str(name)]
        except KeyError:
            raise self._error(
                node,
                f"node {node.node.name!r} uses connection {name!r}, which does not exist; "
                f"create it with 'flowport connection create --file <yaml>'",
                "ConnectionNotFound",
                key,
            ) from None

    def _python_tool(self, node: NodePlan) -> ToolCallable:
        if node.node.source_type == "package" and not node.node.source_path:
            tool = builtin_package_tool(node.node.source_tool, self.pool, node.node.name)
            return tool if tool is not None else self._installed_tool(node)
        path = self._source(node)
        try:
            module = import_module_from_file(path)
            func = find_tool_function(module, path, node.node.source_tool)
        except ToolLoadError as exc:
            raise self._error(node, f"node {node.node.name!r}: {exc}", exc.code) from None
        return ToolCallable.from_function(func)

    def _read_template(self, node: NodePlan, build: Callable[[str, str], Any] = compile_template) -> Any:
        """``build(text, file name)`` of the node's template file (compiled by default)."""
        path = self._source(node)
        try:
            return build(path.read_text(encoding="utf-8"), path.name)
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(node, f"cannot read template {path}: {exc}", "TemplateNotReadable") from None
        except TemplateError as exc:
            raise self._error(node, str(exc), "InvalidTemplate") from None

    def _prompt_tool(self, node: NodePlan) -> ToolCallable:
        template = self._read_template(node)

        def render_prompt(**variables: Any) -> str:
            return render(template, variables)

        return ToolCallable(func=render_prompt, mode=CallMode.INLINE, accepts_any=True)

    def _custom_llm_tool(self, node: NodePlan) -> ToolCallable:
        if node.node.source_type != "package_with_prompt":
            raise self._error(
                node,
                f"custom_llm node {node.node.name!r} has source type {node.node.source_type!r}; "
                "a custom_llm node's source is {type: package_with_prompt, tool: ..., path: ...}",
                "UnsupportedTool",
            )
        if node.node.source_tool == PROMPT_LLM_TOOL:
            return prompt_llm_tool(self._read_template(node), self.pool, node.node.name)
        vision = VISION_TOOLS.get(str(node.node.source_tool))
        if vision is not None:
            return self._read_template(node, lambda text, _: vision(text, self.pool, node.node.name))
        return self._installed_tool(node)

    def _installed_tool(self, node: NodePlan) -> ToolCallable:
        """A tool from a package installed in this environment (``tools.installed_tools``)."""
        try:
            found = self.installed.find(str(node.node.source_tool))
            target = found.load()
        except PackageToolError as exc:
            raise self._error(node, f"node {node.node.name!r}: {exc}", exc.code) from None
        return PackageToolBuilder(self, node, found).build(target)

    def _llm_tool(self, node: NodePlan) -> ToolCallable:
        api = node.node.api or "chat"
        if api not in ("chat", "completion"):
            raise self._error(
                node, f"llm node {node.node.name!r} has api {api!r}; use chat or completion", "InvalidApi"
            )
        template = self._read_template(node)
        connection = self._connection(node, node.node.connection)
        tool_name, params = tool_parameters(api, isinstance(connection, AzureOpenAIConnection))
        clashing = template_variables(self._source(node).read_text(encoding="utf-8")) & params
        if clashing:
            names = "{" + ", ".join(repr(n) for n in sorted(clashing)) + "}"
            raise self._error(
                node,
                f"Invalid inputs {names} in prompt template of node {node.node.name}. "
                f"These inputs are duplicated with the parameters of {tool_name}.",
                "NodeInputValidationError",
            )
        llm = LLMTool(template, api, connection, self.pool, node.node.name)
        return ToolCallable(func=llm, mode=CallMode.ASYNC, accepts_any=True, streams=True)


def chat_format_error(node: str, exc: ChatFormatError) -> ExecutionError:
    return user_error(f"Execution failure in '{node}': {exc}", "ChatAPIInvalidFormat", node=node)


def apply_environment(variables: Mapping[str, str]) -> None:
    """Set the flow's environment variables in this process, before tools run."""
    os.environ.update(variables)
