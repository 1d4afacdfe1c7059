"""A flex entry's signature read as a flow's interface: inputs from its parameters, outputs from its
return annotation, both checked against what the YAML declares (prompt flow's rules and messages)."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

from flowport.engine.errors import user_error
from flowport.flow import MISSING, FlowError, InputDef, OutputDef, ValueType
from flowport.flow.reference import Literal

_TYPES = {str: ValueType.STRING, int: ValueType.INT, float: ValueType.DOUBLE, bool: ValueType.BOOL}
_TYPES |= {list: ValueType.LIST, dict: ValueType.OBJECT}


def value_type(annotation: Any) -> ValueType:
    """The flow input type of a parameter annotation (``list[str]`` is a list; none or unknown: object)."""
    if annotation is inspect.Parameter.empty:
        return ValueType.OBJECT  # as prompt flow: a value that parses as JSON arrives parsed
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return value_type(args[0]) if len(args) == 1 else ValueType.OBJECT
    return _TYPES.get(origin or annotation, ValueType.OBJECT)


def _is_typed_dict(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, dict) and hasattr(annotation, "__total__")


def output_names(func: Any, where: str, entry: str) -> dict[str, ValueType] | None:
    """Output names from the return annotation (dataclass, TypedDict); None when any dict may come.

    prompt flow refuses other annotations (``-> dict`` included) before running anything.
    """
    try:
        annotation = typing.get_type_hints(func).get("return", inspect.Signature.empty)
    except Exception:  # an annotation that does not resolve: read the raw one
        annotation = inspect.signature(func).return_annotation
    if annotation in (inspect.Signature.empty, str, None, type(None)):
        return None
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        hints = typing.get_type_hints(annotation)
        return {f.name: value_type(hints.get(f.name, f.type)) for f in dataclasses.fields(annotation)}
    if _is_typed_dict(annotation):
        return {k: value_type(v) for k, v in typing.get_type_hints(annotation).items()}
    raise FlowError.single(
        "GenerateFlowMetaJsonError",
        f"Parse interface for '{entry}' failed: The return annotation of the entry function must be "
        f"dataclass, TypedDict or string, but got {annotation}.",
        where,
    )


def check_ports(kind: str, declared: Mapping[str, Any], found: Mapping[str, Any]) -> None:
    """The YAML's ``inputs``/``outputs``, when written, must name exactly the entry's (pf's check)."""
    if declared and set(declared) != set(found):
        raise user_error(
            f"Provided signature of {kind} does not match the entry.\n"
            f"Ports from signature: {', '.join(declared)}\nPorts from entry: {', '.join(found)}",
            "SignatureMismatch",
        )


def declared_input(spec: InputDef, written: Mapping[str, Any] | None) -> InputDef:
    if not written:
        return spec
    return dataclasses.replace(
        spec,
        description=written.get("description"),
        is_chat_input=bool(written.get("is_chat_input")),
        is_chat_history=bool(written.get("is_chat_history")),
    )


def declared_output(name: str, kind: ValueType, written: Mapping[str, Any] | None) -> OutputDef:
    written = written or {}
    return OutputDef(
        name,
        Literal(None),
        kind,
        description=written.get("description"),
        is_chat_output=bool(written.get("is_chat_output")),
    )


def signature_inputs(func: Any) -> dict[str, InputDef]:
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    inputs = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, param.annotation)
        default = MISSING if param.default is param.empty else param.default
        inputs[param.name] = InputDef(param.name, value_type(annotation), default)
    return inputs
