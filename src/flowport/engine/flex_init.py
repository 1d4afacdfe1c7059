"""A flex class entry's init arguments: read from ``--init``, ``PROMPTFLOW_FLOW_INIT_CONFIG`` or the
YAML's sample, connection names and model-configuration dicts bound, and the class built."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowport.connections import Connection
from flowport.connections.model_config import MODEL_CONFIGURATIONS, ModelConfigError, build_model_config
from flowport.engine.compile import _is_connection_type
from flowport.engine.errors import user_error
from flowport.flow import MISSING, FlowError
from flowport.flow.flex import FlexDef

INIT_CONFIG_ENV = "PROMPTFLOW_FLOW_INIT_CONFIG"


def parse_init(items: list[str] | None) -> dict[str, Any]:
    """``--init``: JSON text, a JSON/YAML file, or ``key=value`` pairs (values stay strings, as in pf)."""
    if not items:
        return {}
    if len(items) == 1:
        text = items[0].strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise FlowError.single("InvalidInit", f"--init is not valid JSON: {exc}") from None
            return init_mapping(value, "--init")
        path = Path(text).expanduser()
        if "=" not in text or path.is_file():
            return _read_init_file(path)
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FlowError.single("InvalidInit", f"--init expects key=value, JSON or a file, got {item!r}")
        values[key.strip()] = value
    return values


def _read_init_file(path: Path) -> dict[str, Any]:
    from flowport.flow.yaml import load_yaml_file, to_plain

    if not path.is_file():
        raise FlowError.single("InvalidInit", f"--init file {path} does not exist", str(path))
    if path.suffix == ".json":
        try:
            return init_mapping(json.loads(path.read_text(encoding="utf-8")), str(path))
        except ValueError as exc:
            raise FlowError.single("InvalidInit", f"{path} is not valid JSON: {exc}", str(path)) from None
    return init_mapping(to_plain(load_yaml_file(path)), str(path))


def init_mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FlowError.single("InvalidInit", f"{where} must hold an object of init argument names to values")
    return value


def _model_config_type(annotation: Any) -> type | None:
    """The model configuration class an init argument is annotated with (Optional too), if any."""
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and c.__name__ in MODEL_CONFIGURATIONS), None)


def bind_connections(
    cls: type, values: dict[str, Any], connections: Mapping[str, Connection], where: str
) -> dict[str, Any]:
    """An init argument annotated as a connection type, given a name, becomes that connection."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    bound = dict(values)
    for name, param in inspect.signature(cls).parameters.items():
        annotation = hints.get(name, param.annotation)
        value = bound.get(name)
        config_kind = _model_config_type(annotation)
        if isinstance(value, Mapping) and config_kind is not None:
            try:
                bound[name] = build_model_config(config_kind, value, connections)
            except KeyError as exc:
                raise FlowError.single(
                    "ConnectionNotFound",
                    f"init argument {name!r} of {cls.__name__} names connection {exc.args[0]!r}, which "
                    "does not exist; create it with 'flowport connection create --file <yaml>'",
                    where,
                ) from None
            except (ModelConfigError, TypeError) as exc:
                raise FlowError.single(
                    "InvalidModelConfiguration", f"init argument {name!r} of {cls.__name__}: {exc}", where
                ) from None
        elif isinstance(value, str) and _is_connection_type(annotation):
            try:
                bound[name] = connections[value]
            except KeyError:
                raise FlowError.single(
                    "ConnectionNotFound",
                    f"init argument {name!r} of {cls.__name__} names connection {value!r}, which does not "
                    "exist; create it with 'flowport connection create --file <yaml>'",
                    where,
                ) from None
    return bound


def build_entry(cls: type, definition: FlexDef, values: dict[str, Any], where: str) -> Any:
    """The class entry's instance; a missing or unknown init argument names itself."""
    params = inspect.signature(cls).parameters
    if definition.init and set(definition.init) != set(params):
        raise user_error(
            "Provided signature of init does not match the entry.\n"
            f"Ports from signature: {', '.join(definition.init)}\nPorts from entry: {', '.join(params)}",
            "InitSignatureMismatch",
        )
    missing = [
        n for n, p in params.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in values
    ]  # fmt: skip
    if missing:
        raise FlowError.single(
            "FlowInitMissing",
            f"{cls.__name__}.__init__ needs {', '.join(map(repr, missing))}: give --init (JSON, a file or "
            f"key=value), {INIT_CONFIG_ENV}, or sample.init in the flow YAML",
            where,
        )
    try:
        return cls(**values)
    except Exception as exc:
        raise user_error(
            f"Failed to initialize flow entry {definition.entry!r}: ({type(exc).__name__}) {exc}",
            "FlowEntryInitializationError",
        ) from None


def init_values(
    definition: FlexDef, init: Mapping[str, Any] | None, process: Mapping[str, str]
) -> dict[str, Any]:
    """The init arguments: ``init``, else PROMPTFLOW_FLOW_INIT_CONFIG (JSON), else the YAML's
    ``sample.init``, over the YAML's ``init`` defaults."""
    values = {k: p.default for k, p in definition.init.items() if p.default is not MISSING}
    if init:
        return {**values, **init}
    if text := process.get(INIT_CONFIG_ENV):
        try:
            return {**values, **init_mapping(json.loads(text), INIT_CONFIG_ENV)}
        except ValueError as exc:
            raise FlowError.single("InvalidInit", f"{INIT_CONFIG_ENV} is not valid JSON: {exc}") from None
    return {**values, **definition.sample_init}
