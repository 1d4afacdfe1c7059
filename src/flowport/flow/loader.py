"""Read a flow folder into a validated FlowDef.

Every user mistake becomes a Problem with a stable code, the file and the line; all of
them are collected and raised together as one FlowError.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flowport.flow.errors import FlowError, Problem
from flowport.flow.includes import materialize_includes
from flowport.flow.model import (
    MISSING,
    NODE_TYPES,
    Activate,
    FlowDef,
    InputDef,
    NodeDef,
    OutputDef,
    ValueType,
)
from flowport.flow.reference import InputRef, NodeRef, parse_binding
from flowport.flow.values import InputValueError, convert
from flowport.flow.yaml import YamlMap, load_yaml_file, to_plain

FLOW_FILE = "flow.dag.yaml"
_VARIANT = re.compile(r"^\$\{([^.}]+)\.([^.}]+)\}$")


def find_flow_file(path: str | Path) -> Path:
    """Accept a flow folder or a flow.dag.yaml path; return the YAML file."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / FLOW_FILE
    if not path.is_file():
        raise FlowError.single(
            "FlowNotFound",
            f"no flow at {path}: expected a folder with a {FLOW_FILE} file",
            str(path),
        )
    return path.resolve()


def parse_variant(spec: str | None) -> tuple[str, str] | None:
    """Read ``${node.variant_id}`` as (node, variant_id)."""
    if not spec:
        return None
    match = _VARIANT.match(spec.strip())
    if not match:
        raise FlowError.single(
            "InvalidVariant",
            f"variant {spec!r} is not of the form '${{node_name.variant_id}}'",
        )
    return match.group(1), match.group(2)


def load_flow(path: str | Path, *, variant: str | None = None, includes_dir: Path | None = None) -> FlowDef:
    """Load, resolve and validate the flow at ``path``."""
    file = find_flow_file(path)
    raw = load_yaml_file(file)
    if not isinstance(raw, dict):
        raise FlowError.single("InvalidFlow", "a flow file must be a YAML mapping", str(file), 1)
    includes = _includes(raw, str(file))
    flow_dir = file.parent
    if includes:
        flow_dir = materialize_includes(flow_dir, file.name, list(includes), includes_dir)
        file = flow_dir / file.name
    return _Reader(file, flow_dir, raw, parse_variant(variant), includes).read()


def _includes(raw: YamlMap, file: str) -> tuple[str, ...]:
    """``additional_includes``: a list of relative paths, checked before any file is touched."""
    value = raw.get("additional_includes")
    if value is None:
        return ()
    line = _line(raw, "additional_includes")
    if not isinstance(value, list) or not all(isinstance(entry, str) and entry for entry in value):
        raise FlowError.single(
            "InvalidFlow",
            "additional_includes must be a list of paths relative to the flow folder, "
            f"e.g. [../shared/utils.py]; got {value!r}"[:300],
            file,
            line,
        )
    return tuple(value)


class _Reader:
    def __init__(
        self,
        file: Path,
        flow_dir: Path,
        raw: dict[str, Any],
        variant: tuple[str, str] | None,
        includes: tuple[str, ...],
    ) -> None:
        self.file = file
        self.fname = str(file)
        self.flow_dir = flow_dir
        self.raw = raw
        self.variant = variant
        self.includes = includes
        self.problems: list[Problem] = []
        self.broken_nodes: set[str] = set()
        """Nodes named in the flow but not readable: references to them are not errors twice."""

    def problem(self, code: str, message: str, line: int | None) -> None:
        self.problems.append(Problem(code, message, self.fname, line))

    def read(self) -> FlowDef:
        raw = self.raw
        inputs = self.read_inputs(_mapping(raw.get("inputs")))
        nodes, variants = self.read_nodes(raw)
        outputs = self.read_outputs(_mapping(raw.get("outputs")))
        env_vars = self.read_environment_variables(raw)
        self.check_message_format(raw)
        if self.variant and self.variant[0] not in variants:
            self.problem(
                "VariantNotFound",
                f"variant {self.variant[1]!r} was selected for node {self.variant[0]!r}, "
                "but that node has no variants",
                _line(raw, "node_variants"),
            )
        flow = FlowDef(
            path=self.flow_dir,
            file=self.file,
            inputs=inputs,
            outputs=outputs,
            nodes=nodes,
            environment=to_plain(raw.get("environment") or {}),
            environment_variables=to_plain(env_vars),
            additional_includes=self.includes,
            variants=variants,
            raw=to_plain(raw),
        )
        self.check_references(flow)
        self.check_cycles(flow)
        if self.problems:
            raise FlowError(self.problems)
        return flow

    def check_message_format(self, raw: YamlMap) -> None:
        """``message_format``: ``basic`` (images as ``{"data:image/png;path": ...}``) is what runs."""
        given = raw.get("message_format")
        if given is None or str(given).lower() == "basic":
            return
        if str(given).lower() == "openai-vision":
            message = (
                "message_format 'openai-vision' (images as OpenAI content parts) is not supported by "
                'flowport yet; remove it to use the basic format ({"data:image/png;path": ...})'
            )
        else:
            message = (
                f"Invalid message format '{given}'. Supported message formats are ['basic', 'openai-vision']."
            )
        self.problem("InvalidMessageFormatType", message, _line(raw, "message_format"))

    def read_environment_variables(self, raw: YamlMap) -> dict[str, Any]:
        env_vars = raw.get("environment_variables") or {}
        if not isinstance(env_vars, dict):
            self.problem(
                "InvalidFlow", "environment_variables must be a mapping", _line(raw, "environment_variables")
            )
            return {}
        for name, value in env_vars.items():
            if isinstance(value, dict | list):
                kind = "a list" if isinstance(value, list) else "a mapping"
                self.problem(
                    "InvalidFlow",
                    f"environment variable {name!r} is {kind}; a value must be a string "
                    "(quote it, or write JSON as a quoted string)",
                    _line(env_vars, name),
                )
        return env_vars

    # -- inputs and outputs -------------------------------------------------

    def read_inputs(self, raw: YamlMap) -> dict[str, InputDef]:
        inputs: dict[str, InputDef] = {}
        for name, spec in raw.items():
            line = _line(raw, name)
            spec = spec if isinstance(spec, dict) else {"type": spec}
            type_text = str(spec.get("type", "string"))
            try:
                value_type = ValueType(type_text)
            except ValueError:
                allowed = ", ".join(t.value for t in ValueType if t is not ValueType.IMAGE)
                self.problem(
                    "InvalidInputType",
                    f"input {name!r} has type {type_text!r}; use one of {allowed}",
                    line,
                )
                continue
            default = to_plain(spec.get("default", MISSING))
            if default is not MISSING and default is not None:
                try:
                    default = convert(default, value_type)
                except InputValueError:
                    self.problem(
                        "InvalidDefault",
                        f"default {default!r} of input {name!r} is not of type {type_text}",
                        line,
                    )
            enum = spec.get("enum")
            inputs[name] = InputDef(
                name=name,
                type=value_type,
                default=default,
                description=spec.get("description"),
                enum=tuple(enum) if isinstance(enum, list) else None,
                is_chat_input=bool(spec.get("is_chat_input", False)),
                is_chat_history=bool(spec.get("is_chat_history", False)),
                line=line,
            )
        return inputs

    def read_outputs(self, raw: YamlMap) -> dict[str, OutputDef]:
        outputs: dict[str, OutputDef] = {}
        for name, spec in raw.items():
            line = _line(raw, name)
            if not isinstance(spec, dict):
                self.problem("InvalidOutput", f"output {name!r} must be a mapping with a reference", line)
                continue
            try:
                value_type = ValueType(str(spec.get("type", "string")))
            except ValueError:
                value_type = ValueType.STRING
            outputs[name] = OutputDef(
                name=name,
                reference=parse_binding(to_plain(spec.get("reference"))),
                type=value_type,
                description=spec.get("description"),
                is_chat_output=bool(spec.get("is_chat_output", False)),
                evaluation_only=bool(spec.get("evaluation_only", False)),
                line=line,
            )
        return outputs

    # -- nodes and variants -------------------------------------------------

    def read_nodes(self, raw: dict[str, Any]) -> tuple[dict[str, NodeDef], dict[str, tuple[str, ...]]]:
        node_list = raw.get("nodes") or []
        if not isinstance(node_list, list):
            self.problem("InvalidFlow", "nodes must be a list", _line(raw, "nodes"))
            return {}, {}
        node_variants = _mapping(raw.get("node_variants"))
        variants = {
            name: tuple(_mapping(spec.get("variants")).keys())
            for name, spec in node_variants.items()
            if isinstance(spec, dict)
        }
        nodes: dict[str, NodeDef] = {}
        for raw_node in node_list:
            if not isinstance(raw_node, dict) or not raw_node.get("name"):
                self.problem("InvalidNode", "every node needs a name", getattr(raw_node, "line", None))
                continue
            name = str(raw_node["name"])
            line = getattr(raw_node, "line", None)
            if name in nodes:
                self.problem("DuplicateNodeName", f"node name {name!r} is used more than once", line)
                continue
            variant_id = None
            node = None
            if raw_node.get("use_variants"):
                resolved = self.resolve_variant(name, node_variants, line)
                if resolved is not None:
                    variant_id, raw_node = resolved
                    node = self.read_node(name, raw_node, line, variant_id)
            else:
                node = self.read_node(name, raw_node, line, variant_id)
            if node is None:
                self.broken_nodes.add(name)
            else:
                nodes[name] = node
        return nodes, variants

    def resolve_variant(
        self, name: str, node_variants: YamlMap, line: int | None
    ) -> tuple[str, YamlMap] | None:
        spec = node_variants.get(name)
        if not isinstance(spec, dict):
            self.problem(
                "VariantNotFound", f"node {name!r} uses variants but node_variants has none for it", line
            )
            return None
        all_variants = _mapping(spec.get("variants"))
        variant_id = spec.get("default_variant_id")
        if self.variant and self.variant[0] == name:
            variant_id = self.variant[1]
        chosen = all_variants.get(variant_id)
        if not isinstance(chosen, dict) or not isinstance(chosen.get("node"), dict):
            known = ", ".join(map(str, all_variants)) or "none"
            self.problem(
                "VariantNotFound",
                f"node {name!r} has no variant {variant_id!r} (variants: {known})",
                _line(node_variants, name),
            )
            return None
        node = chosen["node"]
        merged = YamlMap({**node, "name": name})
        merged.line = node.line
        merged.key_lines = node.key_lines
        return str(variant_id), merged

    def read_node(self, name: str, raw: YamlMap, line: int | None, variant_id: str | None) -> NodeDef | None:
        node_type = raw.get("type")
        if node_type not in NODE_TYPES:
            self.problem(
                "UnknownNodeType",
                f"node {name!r} has type {node_type!r}; use one of {', '.join(NODE_TYPES)}",
                raw.line_of("type") if isinstance(raw, YamlMap) else line,
            )
            return None
        source = raw.get("source") or {}
        if not isinstance(source, dict):
            source = {}
        source_type = source.get("type")
        source_path = source.get("path")
        source_tool = source.get("tool")
        source_line = raw.line_of("source") if isinstance(raw, YamlMap) else line
        if source_type == "package" and not source_path:
            if node_type not in ("llm", "python"):  # python: the compiler knows the built-in ones
                self.problem(
                    "UnsupportedTool",
                    f"node {name!r} uses package tool {source_tool!r}, which flowport does not provide; "
                    "copy the tool into the flow folder as a python node",
                    source_line,
                )
                return None
        elif not source_path:
            self.problem("MissingSource", f"node {name!r} has no source path", source_line)
            return None
        else:
            target = self.flow_dir / str(source_path)
            if not target.is_file():  # False for a dangling link or a link loop too
                self.problem(
                    "InvalidSource",
                    f"source file {source_path!r} of node {name!r} does not exist in {self.flow_dir}",
                    source_line,
                )
        if raw.get("inputs") is not None and not isinstance(raw.get("inputs"), dict):
            self.problem(
                "InvalidNode",
                f"inputs of node {name!r} must be a mapping of input name to value, "
                f"got {type(raw.get('inputs')).__name__}",
                raw.line_of("inputs") if isinstance(raw, YamlMap) else line,
            )
            return None
        raw_inputs = _mapping(raw.get("inputs"))
        activate = None
        raw_activate = raw.get("activate")
        if isinstance(raw_activate, dict) and raw_activate:
            activate = Activate(
                parse_binding(to_plain(raw_activate.get("when"))), to_plain(raw_activate.get("is"))
            )
        return NodeDef(
            name=name,
            type=node_type,
            source_type=source_type,
            source_path=str(source_path) if source_path else None,
            source_tool=source_tool,
            inputs={k: parse_binding(to_plain(v)) for k, v in raw_inputs.items()},
            connection=raw.get("connection"),
            api=raw.get("api"),
            provider=raw.get("provider"),
            module=raw.get("module"),
            activate=activate,
            aggregation=bool(raw.get("aggregation", raw.get("reduce", False))),
            enable_cache=bool(raw.get("enable_cache", False)),
            variant_id=variant_id,
            line=line,
            input_lines={k: raw_inputs.line_of(k) for k in raw_inputs},
        )

    # -- graph checks -------------------------------------------------------

    def check_binding(
        self, flow: FlowDef, binding: Any, where: str, line: int | None, *, output: bool = False
    ) -> None:
        if isinstance(binding, InputRef) and binding.name not in flow.inputs:
            self.problem(
                "InputReferenceNotFound",
                f"{where} references flow input {binding.name!r}, which is not defined "
                f"(inputs: {', '.join(flow.inputs) or 'none'})",
                line,
            )
        elif isinstance(binding, NodeRef) and binding.node not in self.broken_nodes:
            if binding.node not in flow.nodes:
                self.problem(
                    "OutputReferenceNotFound" if output else "NodeReferenceNotFound",
                    f"{where} references node {binding.node!r}, which does not exist "
                    f"(nodes: {', '.join(flow.nodes) or 'none'})",
                    line,
                )
            elif binding.section != "output" and not output:
                self.problem(
                    "UnsupportedReference",
                    f"{where}: the section {binding.section!r} of reference "
                    f"'${{{binding.node}.{binding.section}}}' is unsupported; "
                    f"write '${{{binding.node}.output.<property>}}'",
                    line,
                )

    def check_references(self, flow: FlowDef) -> None:
        for node in flow.nodes.values():
            for key, binding in node.inputs.items():
                line = node.input_lines.get(key, node.line)
                self.check_binding(flow, binding, f"input {key!r} of node {node.name!r}", line)
                if (
                    isinstance(binding, NodeRef)
                    and binding.node in flow.nodes
                    and flow.nodes[binding.node].aggregation
                    and not node.aggregation
                ):
                    self.problem(
                        "AggregationReference",
                        f"node {node.name!r} runs per line but references aggregation node {binding.node!r}",
                        line,
                    )
            if node.activate:
                where = f"activate condition of node {node.name!r}"
                self.check_binding(flow, node.activate.when, where, node.line)
        for output in flow.outputs.values():
            ref = output.reference
            self.check_binding(flow, ref, f"output {output.name!r}", output.line, output=True)

    def check_cycles(self, flow: FlowDef) -> None:
        deps = {name: node_dependencies(node) & flow.nodes.keys() for name, node in flow.nodes.items()}
        state: dict[str, int] = {}

        def visit(name: str, trail: list[str]) -> None:
            state[name] = 1
            for dep in sorted(deps[name]):
                if state.get(dep) == 1:
                    cycle = [*trail[trail.index(dep) :], dep] if dep in trail else [name, dep]
                    self.problem(
                        "NodeCircularDependency",
                        f"nodes form a cycle: {' -> '.join(cycle)}",
                        flow.nodes[name].line,
                    )
                elif dep not in state:
                    visit(dep, [*trail, dep])
            state[name] = 2

        for name in flow.nodes:
            if name not in state:
                visit(name, [name])


def node_dependencies(node: NodeDef) -> set[str]:
    """Names of the nodes whose outputs this node reads, its activate condition included."""
    deps = {b.node for b in node.inputs.values() if isinstance(b, NodeRef)}
    if node.activate and isinstance(node.activate.when, NodeRef):
        deps.add(node.activate.when.node)
    return deps


def _mapping(value: Any) -> YamlMap:
    if isinstance(value, YamlMap):
        return value
    result = YamlMap(value if isinstance(value, dict) else {})
    result.key_lines = {}
    return result


def _line(raw: Any, key: str) -> int | None:
    return raw.line_of(key) if isinstance(raw, YamlMap) else None
