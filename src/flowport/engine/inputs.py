"""Flow inputs of one line: defaults filled in, values converted to their declared types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowport.engine.errors import user_error
from flowport.flow import MISSING, FlowDef
from flowport.flow.values import InputValueError, convert, type_name


def prepare_inputs(flow: FlowDef, given: Mapping[str, Any], line_number: int | None = None) -> dict[str, Any]:
    """Return the line's inputs, or raise a UserError naming the input at fault.

    Messages are prompt flow's, word for word: clients match on them. Without a line number
    (one request, not a bulk line) the message names no line, as prompt flow's server does.
    """
    where = "" if line_number is None else f" in line {line_number} of input data"
    values: dict[str, Any] = {}
    for name, spec in flow.inputs.items():
        if name not in given:
            if spec.default is MISSING:
                _raise_missing(flow, given)
            values[name] = spec.default
            continue
        value = given[name]
        try:
            values[name] = convert(value, spec.type)
        except InputValueError as exc:
            _raise_missing(flow, given)  # a missing input is named first, wherever it comes
            kind = type_name(spec.type)
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


def _raise_missing(flow: FlowDef, given: Mapping[str, Any]) -> None:
    """Raise the error naming every required input ``given`` lacks, if it lacks any."""
    missing = [name for name, spec in flow.inputs.items() if spec.required and name not in given]
    if missing:
        raise user_error(f'Required input(s) {missing} are missing for "flow".', "InputNotFound")
