"""Flow inputs of one line: defaults filled in, values converted to their declared types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowport.engine.errors import user_error
from flowport.flow import FlowDef
from flowport.flow.values import InputValueError, convert, type_name


def prepare_inputs(flow: FlowDef, given: Mapping[str, Any], line_number: int | None = None) -> dict[str, Any]:
    """Return the line's inputs, or raise a UserError naming the input at fault."""
    line = f" in line {line_number}" if line_number is not None else ""
    values: dict[str, Any] = {}
    for name, spec in flow.inputs.items():
        if name in given:
            value = given[name]
        elif not spec.required:
            values[name] = spec.default
            continue
        else:
            raise user_error(
                f"The value for flow input '{name}' is not provided{line}. "
                f"Add it to the inputs (declared at {flow.file.name}:{spec.line}).",
                "InputNotFound",
            )
        if value is None:
            values[name] = None
            continue
        try:
            values[name] = convert(value, spec.type)
        except InputValueError:
            raise user_error(
                f"Input '{name}'{line} for flow '{flow.name}' of value {value!r} "
                f"is not type {type_name(spec.type)}.",
                "InputTypeError",
            ) from None
    return values
