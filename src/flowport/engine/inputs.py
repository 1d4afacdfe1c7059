"""Flow inputs of one line: defaults filled in, values converted to their declared types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowport.engine.errors import user_error
from flowport.flow import MISSING, FlowDef
from flowport.flow.model import ValueType
from flowport.flow.values import InputValueError, convert, type_name
from flowport.tools.multimedia import has_media_dict, image_from, images_in

_ABSENT = object()
_STRING = ValueType.STRING


def prepare_inputs(flow: FlowDef, given: Mapping[str, Any], line_number: int | None = None) -> dict[str, Any]:
    """Return the line's inputs, or raise a UserError naming the input at fault.

    Messages are prompt flow's, word for word: clients match on them. Without a line number
    (one request, not a bulk line) the message names no line, as prompt flow's server does.
    """
    values: dict[str, Any] = {}
    for name, spec in flow.inputs.items():
        if (value := given.get(name, _ABSENT)) is _ABSENT:
            if spec.default is MISSING:
                _raise_missing(flow, given)
            values[name] = spec.default
            continue
        if type(value) is str and spec.type is _STRING:  # the common case, nothing to convert
            values[name] = value
            continue
        try:
            values[name] = convert(value, spec.type)
        except InputValueError as exc:
            _raise_missing(flow, given)  # a missing input is named first, wherever it comes
            kind = type_name(spec.type)
            where = "" if line_number is None else f" in line {line_number} of input data"
            if exc.parse_error:
                raise user_error(
                    f"Failed to parse the flow input. The value for flow input '{name}'{where} "
                    f"was interpreted as JSON string since its type is '{kind}'. However, "
                    f"the value '{value}' is invalid for JSON parsing. Error details: {exc.parse_error}. "
                    "Please make sure your inputs are properly formatted.",
                    "InputParseError",
                ) from None
            raise user_error(
                f"The input for flow is incorrect. The value for flow input '{name}'{where} "
                f"does not match the expected type '{kind}'. Please change flow input "
                "type or adjust the input value in your input data.",
                "InputTypeError",
            ) from None
    return values


InputPlan = tuple[tuple[str, Any, bool], ...]
"""A flow's inputs as ``prepare_planned`` reads them: name, default, whether of type string."""


def input_plan(flow: FlowDef) -> InputPlan:
    """The flow's inputs, read once for ``prepare_planned``."""
    return tuple((name, spec.default, spec.type is _STRING) for name, spec in flow.inputs.items())


def prepare_planned(
    plan: InputPlan, flow: FlowDef, given: Mapping[str, Any], line_number: int | None = None
) -> dict[str, Any]:
    """``prepare_inputs`` for a line whose inputs need nothing done but defaults filled in (string
    inputs given as strings); any other line goes to ``prepare_inputs``, which decides."""
    values: dict[str, Any] = {}
    for name, default, string in plan:
        if (value := given.get(name, _ABSENT)) is _ABSENT:
            if default is MISSING:
                return prepare_inputs(flow, given, line_number)
            values[name] = default
        elif string and type(value) is str:
            values[name] = value
        else:
            return prepare_inputs(flow, given, line_number)
    return values


def _raise_missing(flow: FlowDef, given: Mapping[str, Any]) -> None:
    """Raise the error naming every required input ``given`` lacks, if it lacks any."""
    missing = [name for name, spec in flow.inputs.items() if spec.required and name not in given]
    if missing:
        raise user_error(f'Required input(s) {missing} are missing for "flow".', "InputNotFound")


_MEDIA_HOLDERS = (ValueType.LIST, ValueType.OBJECT)


def has_media(flow: FlowDef, values: Mapping[str, Any]) -> bool:
    """Whether the line's inputs hold images to read (``image`` inputs, or media dicts inside
    ``list``/``object`` inputs)."""
    for name, spec in flow.inputs.items():
        value = values.get(name)
        if value is None:
            continue
        if spec.type is ValueType.IMAGE or (spec.type in _MEDIA_HOLDERS and has_media_dict(value)):
            return True
    return False


def load_media(flow: FlowDef, values: dict[str, Any], confine: bool = False) -> dict[str, Any]:
    """The inputs with their images read as ``Image`` values (paths relative to the flow folder;
    ``confine``: only files inside it), as prompt flow reads them: an ``image`` input (a list of
    them for aggregation), and media dicts inside ``list``/``object`` inputs. A failure is prompt
    flow's ``LoadMultimediaDataError``."""
    loaded = dict(values)
    for name, spec in flow.inputs.items():
        value = loaded.get(name)
        try:
            if spec.type is ValueType.IMAGE and value is not None:
                if isinstance(value, list):
                    loaded[name] = [image_from(item, flow.path, confine) for item in value]
                else:
                    loaded[name] = image_from(value, flow.path, confine)
            elif spec.type in _MEDIA_HOLDERS:
                loaded[name] = images_in(value, flow.path, confine)
        except Exception as exc:
            raise user_error(
                f"Failed to load image for input '{name}': ({type(exc).__name__}) {exc}",
                "LoadMultimediaDataError",
            ) from None
    return loaded
