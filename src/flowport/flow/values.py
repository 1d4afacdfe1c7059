"""Flow input values: converting what a caller sends to the declared input type."""

from __future__ import annotations

import json
from typing import Any

from flowport.flow.model import ValueType

_TYPE_NAMES = {
    ValueType.INT: "int",
    ValueType.DOUBLE: "double",
    ValueType.BOOL: "bool",
    ValueType.STRING: "string",
    ValueType.LIST: "list",
    ValueType.OBJECT: "object",
    ValueType.IMAGE: "image",
}


class InputValueError(ValueError):
    """A value cannot be read as the declared type; ``parse_error`` when JSON did not parse."""

    def __init__(self, parse_error: str | None = None) -> None:
        super().__init__(parse_error or "type mismatch")
        self.parse_error = parse_error


def _parse_json(value: str, expected: type) -> Any:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise InputValueError(f"({type(exc).__name__}) {exc}") from None
    if not isinstance(parsed, expected):
        raise InputValueError
    return parsed


def convert(value: Any, value_type: ValueType) -> Any:
    """Convert one value as prompt flow does; raise InputValueError when it does not fit."""
    if value_type is ValueType.STRING:
        return value if isinstance(value, str) else str(value)
    if value is None and value_type is not ValueType.OBJECT:
        raise InputValueError
    if value_type in (ValueType.INT, ValueType.DOUBLE):
        if isinstance(value, bool):
            raise InputValueError
        try:
            return int(value) if value_type is ValueType.INT else float(value)
        except (TypeError, ValueError):
            raise InputValueError from None
    if value_type is ValueType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InputValueError
    if value_type is ValueType.LIST:
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return _parse_json(value, list)
        raise InputValueError
    if value_type is ValueType.OBJECT:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    return value


def type_name(value_type: ValueType) -> str:
    return _TYPE_NAMES[value_type]
