"""Flex flows as written: ``flow.flex.yaml`` or a bare ``module:function`` / ``module:Class``.

This module reads the definition only (entry, init, sample, environment); it never imports the
user's code. What the entry's signature says (inputs, outputs) is read by ``engine.flex``.
Also here: ``describe_flow_path``, which says what a ``--flow`` path holds when it is no flow
flowport can run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowport.flow.errors import FlowError
from flowport.flow.loader import FLOW_FILE, find_flow_file, load_flow
from flowport.flow.model import MISSING, FlowDef, InputDef, OutputDef, ValueType
from flowport.flow.reference import Literal
from flowport.flow.yaml import YamlMap, load_yaml_file, read_text_file, to_plain

FLEX_FILE = "flow.flex.yaml"
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_FILE_REF = re.compile(r"^\$\{file:(.+)\}$")
_INIT_TYPES = {t.value for t in ValueType}
FLEX_MARK = "flowport.flex"
"""The key in ``FlowDef.raw`` that marks a flex flow (a DAG's raw YAML cannot hold a dotted key
by accident): ``{"entry": ..., "connection_names": [...]}``."""


@dataclass(frozen=True)
class InitParam:
    """One ``init:`` entry of flow.flex.yaml (the class's ``__init__`` argument)."""

    name: str
    type: str | None = None
    default: Any = MISSING


@dataclass(frozen=True)
class FlexDef:
    """A flex flow: where its entry lives and what the YAML says around it."""

    path: Path
    """The folder the entry's module is imported from."""
    module: str
    attr: str
    file: Path | None = None
    init: dict[str, InitParam] = field(default_factory=dict)
    sample_inputs: dict[str, Any] = field(default_factory=dict)
    sample_init: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    environment_variables: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``inputs:`` as written (type, default, description, is_chat_input, is_chat_history), if any."""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``outputs:`` as written (type, description, is_chat_output), if any."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def entry(self) -> str:
        return f"{self.module}:{self.attr}"


def is_entry(text: str) -> bool:
    """``module:function`` or ``package.module:Class``."""
    return bool(_ENTRY.match(text))


def flex_file(path: str | Path) -> Path | None:
    """The flow.flex.yaml a ``--flow`` path names (the folder or the file), if any."""
    path = Path(path)
    if path.is_dir() and (path / FLEX_FILE).is_file() and not (path / FLOW_FILE).is_file():
        return path / FLEX_FILE
    if path.is_file() and path.name.endswith((".flex.yaml", ".flex.yml")):
        return path
    return None


def is_flex(path: str | Path) -> bool:
    """Whether ``path`` (a folder, a YAML file, or ``module:attr`` in the current folder) is a flex flow."""
    text = str(path)
    return flex_file(path) is not None or (is_entry(text) and not Path(text).exists())


def load_flex(path: str | Path, *, cwd: Path | None = None) -> FlexDef:
    """Read a flex flow: a flow.flex.yaml (its folder or itself) or an entry in ``cwd``."""
    text = str(path)
    yaml_file = flex_file(path)
    if yaml_file is None:
        if not is_entry(text):
            raise FlowError.single("FlowNotFound", f"{text} is neither a flex flow YAML nor module:function")
        module, attr = text.split(":")
        return FlexDef(path=(cwd or Path.cwd()).resolve(), module=module, attr=attr)
    yaml_file = yaml_file.resolve()
    raw = load_yaml_file(yaml_file)
    where = str(yaml_file)
    if not isinstance(raw, dict):
        raise FlowError.single("InvalidFlexFlow", "flow.flex.yaml must be a mapping with an 'entry'", where)
    entry = raw.get("entry")
    line = raw.line_of("entry") if isinstance(raw, YamlMap) else None
    if not isinstance(entry, str) or not is_entry(entry.strip()):
        raise FlowError.single(
            "InvalidFlexFlowEntry",
            f"'entry' must be 'module:function' or 'module:Class' (got {entry!r}); "
            "the module is a .py file in the flow folder, imported by its dotted name",
            where,
            line,
        )
    module, attr = entry.strip().split(":")
    sample = _sample(raw.get("sample"), yaml_file)
    return FlexDef(
        path=yaml_file.parent,
        module=module,
        attr=attr,
        file=yaml_file,
        init=_init(raw.get("init"), where, raw.line_of("init") if isinstance(raw, YamlMap) else None),
        sample_inputs=dict(sample.get("inputs") or {}),
        sample_init=dict(sample.get("init") or {}),
        environment=to_plain(raw.get("environment") or {}),
        environment_variables=to_plain(raw.get("environment_variables") or {}),
        inputs=_ports(raw.get("inputs"), "inputs", where),
        outputs=_ports(raw.get("outputs"), "outputs", where),
    )


def _ports(raw: Any, key: str, where: str) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FlowError.single("InvalidFlexFlow", f"'{key}' must map names to their definitions", where)
    return {str(k): v if isinstance(v, dict) else {} for k, v in to_plain(raw).items()}


def _init(raw: Any, where: str, line: int | None) -> dict[str, InitParam]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FlowError.single(
            "InvalidFlexFlowInit", "'init' must map argument names to {type, default}", where, line
        )
    params = {}
    for name, spec in to_plain(raw).items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type")
        if kind is not None and kind not in _INIT_TYPES:
            raise FlowError.single(
                "InvalidFlexFlowInit",
                f"init argument {name!r} has type {kind!r}; expected one of {', '.join(sorted(_INIT_TYPES))}",
                where,
                line,
            )
        params[name] = InitParam(name, kind, spec.get("default", MISSING))
    return params


def _sample(raw: Any, yaml_file: Path) -> dict[str, Any]:
    """``sample:`` inline, ``${file:x.json}`` or a plain file name; it holds ``inputs`` and ``init``."""
    if isinstance(raw, str):
        match = _FILE_REF.match(raw.strip())
        target = yaml_file.parent / (match.group(1) if match else raw.strip())
        if not target.is_file():
            raise FlowError.single(
                "SampleFileNotFound", f"sample file {target} does not exist", str(yaml_file)
            )
        text = read_text_file(target)
        try:
            raw = json.loads(text) if target.suffix == ".json" else to_plain(load_yaml_file(target))
        except ValueError as exc:
            raise FlowError.single(
                "InvalidSample", f"{target} is not valid JSON: {exc}", str(target)
            ) from None
    raw = to_plain(raw) if raw is not None else {}
    return raw if isinstance(raw, dict) else {}


def as_flow_def(definition: FlexDef) -> FlowDef:
    """A flex flow as a FlowDef for those who must not import its code (the control plane): the
    inputs and outputs its YAML declares (the entry's signature is not read), its variables,
    environment and the connection names its sample init gives."""
    names = sorted({v for v in definition.sample_init.values() if isinstance(v, str)})
    inputs = {
        name: InputDef(
            name,
            _value_type(spec.get("type")),
            spec.get("default", MISSING),
            spec.get("description"),
            is_chat_input=bool(spec.get("is_chat_input")),
            is_chat_history=bool(spec.get("is_chat_history")),
        )
        for name, spec in definition.inputs.items()
    }
    outputs = {
        name: OutputDef(
            name,
            Literal(None),
            _value_type(spec.get("type")),
            spec.get("description"),
            is_chat_output=bool(spec.get("is_chat_output")),
        )
        for name, spec in definition.outputs.items()
    }
    return FlowDef(
        path=definition.path,
        file=definition.file or definition.path,
        inputs=inputs,
        outputs=outputs,
        nodes={},
        environment=definition.environment,
        environment_variables=definition.environment_variables,
        raw={FLEX_MARK: {"entry": definition.entry, "connection_names": names}},
    )


def _value_type(text: Any) -> ValueType:
    return ValueType(text) if text in _INIT_TYPES else ValueType.STRING


def load_any_flow(path: str | Path, *, includes_dir: Path | None = None) -> FlowDef:
    """A DAG flow (validated), a flex flow's or a prompty's definition (see ``as_flow_def``)."""
    from flowport.flow import prompty  # it builds on this module

    if prompty.prompty_in(path) is not None:
        return prompty.as_flow_def(prompty.load_prompty(path))
    if flex_file(path) is not None:
        return as_flow_def(load_flex(path))
    return load_flow(path, includes_dir=includes_dir)


def find_any_flow_file(path: str | Path) -> Path:
    """The flow.flex.yaml, flow.dag.yaml or .prompty a folder (or file) names."""
    from flowport.flow.prompty import prompty_in  # it builds on this module

    found = flex_file(path) or prompty_in(path)
    return found.resolve() if found is not None else find_flow_file(path)


def describe_flow_path(path: str | Path) -> str | None:
    """Why ``path`` is no flow flowport can run (what was found there), or None if it may be one."""
    text = str(path)
    target = Path(text).expanduser()
    if not target.exists():
        if is_entry(text):
            return None
        return f"{text} does not exist; give a flow folder, its YAML file, or module:function"
    if target.is_file():
        if target.suffix == ".prompty":
            return None
        if target.name == FLOW_FILE or flex_file(target) is not None:
            return None
        if target.suffix == ".py":
            return (
                f"{text} is a Python file, not a flow; for a flex flow give --flow {target.stem}:<function> "
                f"from its folder, or add a {FLEX_FILE} with 'entry: {target.stem}:<function>'"
            )
        return f"{text} is a file but not a flow: expected {FLOW_FILE}, {FLEX_FILE} or a flow folder"
    if (target / FLOW_FILE).is_file() or (target / FLEX_FILE).is_file():
        return None
    if len(list(target.glob("*.prompty"))) == 1:  # a folder that is one prompty
        return None
    found = sorted(p.name for p in target.iterdir() if not p.name.startswith("."))
    prompty = [n for n in found if n.endswith(".prompty")]
    scripts = [n for n in found if n.endswith(".py")]
    if not found:
        what = "it is empty"
    elif prompty:
        what = f"it holds {', '.join(prompty)}; give one of them as the flow"
    elif scripts:
        what = (
            f"it holds Python files ({', '.join(scripts[:5])}) but no flow YAML; for a flex flow add a "
            f"{FLEX_FILE} with 'entry: module:function', or pass --flow module:function from that folder"
        )
    else:
        what = f"it holds {', '.join(found[:5])}{' ...' if len(found) > 5 else ''} but no flow YAML"
    return f"no flow in {text}: {what}; expected {FLOW_FILE} or {FLEX_FILE}"
