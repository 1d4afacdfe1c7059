"""Prompty files as written: YAML front matter between ``---`` lines, then a Jinja2 template.

This module reads the file only: the model (``api``, ``configuration``, ``parameters``,
``response``), typed inputs with defaults, outputs, ``sample`` (inline or ``${file:x}``) and the
template text. ``${file:x}`` values are read here (relative to the file); ``${env:VAR}`` values
are left for the engine, which reads them when the prompty is loaded to run.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowport.flow.errors import FlowError
from flowport.flow.flex import FLEX_MARK
from flowport.flow.model import MISSING, FlowDef, InputDef, OutputDef, ValueType
from flowport.flow.reference import Literal
from flowport.flow.yaml import load_yaml_file, parse_yaml, read_text_file, to_plain

SUFFIX = ".prompty"
APIS = ("chat", "completion")
RESPONSES = ("first", "all")
CONFIG_TYPES = ("openai", "azure_openai")
_FRONT = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.DOTALL)
_FILE_REF = re.compile(r"^\$\{file:(.+)\}$")
_TYPES = {t.value for t in ValueType}
CHAT_HISTORY = "chat_history"


@dataclass(frozen=True)
class PromptyDef:
    """One ``.prompty`` file."""

    file: Path
    name: str
    template: str
    api: str = "chat"
    configuration: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    response: str = "first"
    inputs: dict[str, InputDef] = field(default_factory=dict)
    outputs: dict[str, OutputDef] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    description: str | None = None

    @property
    def path(self) -> Path:
        return self.file.parent


def is_prompty(path: str | Path) -> bool:
    """A ``.prompty`` file, or a folder holding exactly one and no flow YAML (see ``prompty_in``)."""
    return prompty_in(path) is not None


def prompty_in(path: str | Path) -> Path | None:
    """The prompty ``path`` names: the file itself, or a folder's only ``.prompty`` when it holds no
    flow.dag.yaml / flow.flex.yaml (so a model folder may be one prompty)."""
    target = Path(path).expanduser()
    if target.is_file():
        return target if target.suffix == SUFFIX else None
    if not target.is_dir() or any((target / f).is_file() for f in ("flow.dag.yaml", "flow.flex.yaml")):
        return None
    found = [p for p in target.iterdir() if p.suffix == SUFFIX and p.is_file()]
    return found[0] if len(found) == 1 else None


def _problem(message: str, file: Path, code: str = "InvalidPrompty") -> FlowError:
    return FlowError.single(code, message, str(file))


def split_front_matter(text: str, file: Path) -> tuple[dict[str, Any], str]:
    """The front matter as a dict and the template after it."""
    match = _FRONT.match(text)
    if not match:
        raise _problem(
            "a prompty file starts with YAML front matter between two '---' lines, then the template",
            file,
        )
    front = to_plain(parse_yaml(match.group(1), str(file))) or {}
    if not isinstance(front, dict):
        raise _problem("the front matter must be a YAML mapping (name, model, inputs, ...)", file)
    return front, match.group(2)


def _file_value(value: Any, file: Path) -> Any:
    """``${file:x.json}`` (or YAML) read relative to the prompty; anything else as it is."""
    if isinstance(value, str) and (match := _FILE_REF.match(value.strip())):
        target = file.parent / match.group(1)
        if not target.is_file():
            raise _problem(f"{value} names {target}, which does not exist", file, "FileNotFound")
        text = read_text_file(target)
        try:
            return json.loads(text) if target.suffix == ".json" else to_plain(load_yaml_file(target))
        except ValueError as exc:
            raise _problem(f"{target} is not valid JSON: {exc}", file) from None
    if isinstance(value, dict):
        return {k: _file_value(v, file) for k, v in value.items()}
    return value


def _inputs(raw: Any, file: Path) -> dict[str, InputDef]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _problem("'inputs' must map input names to {type, default, description}", file)
    inputs = {}
    for name, spec in raw.items():
        spec = spec if isinstance(spec, dict) else {"default": spec}
        kind = spec.get("type", "string")
        if kind not in _TYPES:
            raise _problem(
                f"input {name!r} has type {kind!r}; expected one of {', '.join(sorted(_TYPES))}", file
            )
        inputs[str(name)] = InputDef(
            str(name),
            ValueType(kind),
            spec.get("default", MISSING),
            spec.get("description"),
            is_chat_input=bool(spec.get("is_chat_input")),
            is_chat_history=bool(spec.get("is_chat_history")),
        )
    return inputs


def _outputs(raw: Any, file: Path) -> dict[str, OutputDef]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _problem("'outputs' must map output names to {type, description}", file)
    outputs = {}
    for name, spec in raw.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type", "string")
        outputs[str(name)] = OutputDef(
            str(name),
            Literal(None),
            ValueType(kind) if kind in _TYPES else ValueType.STRING,
            spec.get("description"),
            is_chat_output=bool(spec.get("is_chat_output")),
        )
    return outputs


def chat_ports(definition: PromptyDef) -> tuple[dict[str, InputDef], dict[str, OutputDef]]:
    """The prompty's inputs and outputs, with a chat prompty's chat input, history and output marked.

    Marked in the file (``is_chat_input``, ``is_chat_history``, ``is_chat_output``, as in a flow), or
    not: an ``api: chat`` prompty with a list input ``chat_history`` and a string input ``question``
    (or one other string input) is a chat prompty, as prompt flow's chat prompty examples are written.
    A chat prompty that declares no outputs answers its text as ``output``, its chat output.
    """
    inputs, outputs = dict(definition.inputs), dict(definition.outputs)
    if definition.api != "chat":
        return inputs, outputs
    history = inputs.get(CHAT_HISTORY)
    if history is not None and history.type is ValueType.LIST:
        if not any(i.is_chat_history for i in inputs.values()):
            inputs[CHAT_HISTORY] = dataclasses.replace(history, is_chat_history=True)
        if not any(i.is_chat_input for i in inputs.values()):
            strings = [i for n, i in inputs.items() if n != CHAT_HISTORY and i.type is ValueType.STRING]
            chat_input = inputs.get("question") or (strings[0] if len(strings) == 1 else None)
            if chat_input is not None:
                inputs[chat_input.name] = dataclasses.replace(chat_input, is_chat_input=True)
    if any(i.is_chat_input for i in inputs.values()) and not outputs and definition.response == "first":
        outputs["output"] = OutputDef("output", Literal(None), ValueType.STRING, None, is_chat_output=True)
    return inputs, outputs


def as_flow_def(definition: PromptyDef) -> FlowDef:
    """The prompty's inputs and outputs as a FlowDef, marked as the flex flows are (its connection
    name, if any, is a connection candidate for the control plane). A chat prompty's history holds
    OpenAI messages (``{"role", "content"}``, what its template reads), not a flow's turns."""
    name = definition.configuration.get("connection")
    inputs, outputs = chat_ports(definition)
    return FlowDef(
        path=definition.path,
        file=definition.file,
        inputs=inputs,
        outputs=outputs,
        nodes={},
        raw={
            FLEX_MARK: {
                "entry": definition.file.name,
                "connection_names": [name] if isinstance(name, str) else [],
                "chat_history_format": "messages",
            }
        },
    )


def load_prompty(path: str | Path) -> PromptyDef:
    """Read and check a ``.prompty`` file (or a folder's only one); every problem is a FlowError."""
    file = (prompty_in(path) or Path(path)).expanduser().resolve()
    if not file.is_file():
        raise _problem(f"{path} does not exist", file, "FlowNotFound")
    front, template = split_front_matter(read_text_file(file), file)
    model = front.get("model") or {}
    if not isinstance(model, dict):
        raise _problem("'model' must be a mapping with api, configuration and parameters", file)
    api = model.get("api", "chat")
    if api not in APIS:
        raise _problem(f"model.api is {api!r}; expected 'chat' or 'completion'", file)
    response = model.get("response", "first")
    if response not in RESPONSES:
        raise _problem(f"model.response is {response!r}; expected 'first' or 'all'", file)
    configuration = model.get("configuration") or {}
    if not isinstance(configuration, dict):
        raise _problem("model.configuration must be a mapping (type, connection or keys)", file)
    kind = configuration.get("type")
    if kind not in CONFIG_TYPES:
        said = "is missing" if kind is None else f"is {kind!r}"
        raise _problem(f"model.configuration.type {said}; give 'openai' or 'azure_openai'", file)
    parameters = _file_value(model.get("parameters") or {}, file)
    if not isinstance(parameters, dict):
        raise _problem("model.parameters must be a mapping (max_tokens, temperature, ...)", file)
    sample = _file_value(front.get("sample"), file)
    if sample is not None and not isinstance(sample, dict):
        raise _problem("'sample' must map input names to values, inline or as ${file:sample.json}", file)
    return PromptyDef(
        file=file,
        name=str(front.get("name") or file.stem),
        template=template,
        api=api,
        configuration=dict(configuration),
        parameters=dict(parameters),
        response=response,
        inputs=_inputs(front.get("inputs"), file),
        outputs=_outputs(front.get("outputs"), file),
        sample=dict(sample or {}),
        description=front.get("description"),
    )
