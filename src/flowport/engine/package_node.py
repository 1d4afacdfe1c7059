"""A node whose tool comes from an installed package: its parameters, its class, its prompt.

As prompt flow 1.18.5 calls them (recorded in ``tests/flows/package_installed``): literal inputs
convert by the spec's input types, Python defaults apply (a spec's ``default`` does not); a
class-based tool is built once from the node's literal inputs that its ``__init__`` takes; a
``custom_llm`` tool gets its ``path`` file unrendered as the parameter annotated
``PromptTemplate``, plus ``_inputs_to_escape`` (the inputs fed by flow inputs) when it takes
``**kwargs``.
"""

from __future__ import annotations

import importlib
import inspect
from functools import partial
from typing import TYPE_CHECKING, Any

from flowport.flow import NodePlan
from flowport.flow.reference import InputRef, Literal, NodeRef
from flowport.tools.callable import CallMode, Param, ToolCallable
from flowport.tools.installed_tools import InstalledTool
from flowport.tools.templates import template_variables

if TYPE_CHECKING:
    from flowport.engine.compile import FlowCompiler


def _prompt_template_class() -> type[str]:
    try:  # the class the tool's own ``from promptflow.contracts.types import PromptTemplate`` gives
        return importlib.import_module("promptflow.contracts.types").PromptTemplate
    except (ImportError, AttributeError):
        return str


def _as_written(binding: InputRef | NodeRef) -> str:
    """A reference as prompt flow writes it in messages (a flow input as ``${flow.x}``)."""
    return f"${{flow.{binding.name}}}" if isinstance(binding, InputRef) else binding.describe()


def _is_prompt_template(annotation: Any) -> bool:
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    return name == "PromptTemplate"


class PackageToolBuilder:
    """Builds the ToolCallable of one package node, with the compiler's conversions and errors."""

    def __init__(self, compiler: FlowCompiler, node: NodePlan, found: InstalledTool) -> None:
        self.compiler = compiler
        self.node = node
        self.found = found
        self.name = node.node.name
        self.tool_name = str(found.spec.get("name") or found.identifier)
        """What prompt flow's messages call the tool: its spec's ``name``."""

    def _params(self, signature: inspect.Signature) -> dict[str, Param]:
        return {
            name: Param(name, self.found.input_annotation(name) or p.annotation, p.default)
            for name, p in signature.parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name != "self"
        }

    def build(self, target: Any) -> ToolCallable:
        self._check_connection_types()
        init_inputs: frozenset[str] = frozenset()
        func = target
        if self.found.class_name:
            init_params = self._params(inspect.signature(target.__init__))
            init_inputs = frozenset(init_params)
            func = getattr(self._instance(target, init_params), str(self.found.spec["function"]))
        signature = inspect.signature(func)
        params = self._params(signature)
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        if self.node.node.type == "custom_llm":  # a package_with_prompt node: its template is bound
            func = self._with_prompt(func, params, accepts_any)
        mode = CallMode.ASYNC if is_async else CallMode.THREAD
        return ToolCallable(func, mode, params, accepts_any=accepts_any, init_inputs=init_inputs)

    def _check_connection_types(self) -> None:
        """A connection given by name must be of a type the spec lists for that input."""
        for key, binding in self.node.node.inputs.items():
            types = self.found.connection_types(key)
            if not types or not isinstance(binding, Literal) or not binding.value:
                continue
            given = type(self.compiler._connection(self.node, binding.value, key)).__name__
            if given not in types:
                raise self.compiler._error(
                    self.node,
                    f"Input '{key}' for node '{self.name}' of type {given!r} is not supported, "
                    f"valid types {types}.",
                    "NodeInputValidationError",
                    key,
                )

    def _instance(self, cls: type, init_params: dict[str, Param]) -> Any:
        """The tool's class built with the node's literal inputs its ``__init__`` takes."""
        holder = ToolCallable(func=cls, mode=CallMode.THREAD, params=init_params)
        values: dict[str, Any] = {}
        for key in init_params:
            binding = self.node.node.inputs.get(key)
            if binding is None:
                continue
            if not isinstance(binding, Literal):
                raise self.compiler._error(
                    self.node,
                    f"Invalid input for '{self.tool_name}': Initialization input '{key}' requires a "
                    f"literal value, but {_as_written(binding)} was received.",
                    "InputTypeMismatch",
                    key,
                )
            if binding.value is not None and binding.value != "":
                values[key] = self.compiler._literal(self.node, holder, key, binding)
        missing = [k for k, p in init_params.items() if not p.has_default and k not in values]
        if missing:
            raise self.compiler._error(
                self.node,
                f"Required inputs {missing} are not provided for tool '{self.tool_name}'.",
                "MissingRequiredInputs",
            )
        try:
            return cls(**values)
        except Exception as exc:
            raise self.compiler._error(
                self.node,
                f"node {self.name!r}: Failed to load package tool '{self.tool_name}': "
                f"({type(exc).__name__}) {exc}",
                "ToolLoadError",
            ) from None

    def _with_prompt(self, func: Any, params: dict[str, Param], accepts_any: bool) -> Any:
        """``func`` with its prompt template (and ``_inputs_to_escape``) bound; ``params`` loses it."""
        prompt = next((name for name, p in params.items() if _is_prompt_template(p.annotation)), None)
        if prompt is None:
            raise self.compiler._error(
                self.node,
                f"Invalid Custom LLM tool {self.found.identifier}: function "
                f"{getattr(func, '__name__', func)} is missing a prompt template argument.",
                "InvalidCustomLLMTool",
            )
        path = self.compiler._source(self.node)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise self.compiler._error(
                self.node, f"cannot read template {path}: {exc}", "TemplateNotReadable"
            ) from None
        clashing = template_variables(text) & self.found.input_names
        if clashing:
            names = "{" + ", ".join(repr(n) for n in sorted(clashing)) + "}"
            raise self.compiler._error(
                self.node,
                f"Invalid inputs {names} in prompt template of node {self.name}. "
                "These inputs are duplicated with the inputs of custom llm tool.",
                "NodeInputValidationError",
            )
        bound: dict[str, Any] = {prompt: _prompt_template_class()(text)}
        escaped = [key for key, binding in self.node.node.inputs.items() if isinstance(binding, InputRef)]
        if escaped and accepts_any:
            bound["_inputs_to_escape"] = escaped
        del params[prompt]
        return partial(func, **bound)
