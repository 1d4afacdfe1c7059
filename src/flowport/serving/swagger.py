"""The OpenAPI document of a flow, shaped as prompt flow's serving app writes it.

Clients and tools already read that document, so its shape is kept: every input listed as
required, a ``default`` only when it is truthy, the first of ``samples.json`` as the example,
the chat markers in ``info``, and the ``/feedback`` route.
"""

from __future__ import annotations

import json
from typing import Any

from flowport.flow import MISSING, FlowDef, ValueType

_OBJECT = {"type": "object", "additionalProperties": {}}
_SCHEMA_TYPES: dict[ValueType, dict[str, Any]] = {
    ValueType.INT: {"type": "integer"},
    ValueType.DOUBLE: {"type": "number"},
    ValueType.BOOL: {"type": "boolean"},
    ValueType.STRING: {"type": "string"},
    ValueType.LIST: {"type": "array", "items": _OBJECT},
    ValueType.OBJECT: _OBJECT,
    ValueType.IMAGE: {"type": "object"},  # a path, URL or base64 string, or a one-key dict
}
_ERRORS = {"400": {"description": "Invalid input"}, "default": {"description": "unexpected error"}}


def _schema(value_type: ValueType, description: str | None, default: Any = None) -> dict[str, Any]:
    base = _SCHEMA_TYPES[value_type]
    schema: dict[str, Any] = {"type": base["type"]}
    if description:
        schema["description"] = description
    if default:
        schema["default"] = default
    schema.update({k: v for k, v in base.items() if k != "type"})
    return schema


def _flex_default(value: Any) -> Any:
    """A flex entry's Python default as prompt flow's signature meta holds it: its ``str()``."""
    return None if value is None or value is MISSING else str(value)


def _example(flow: FlowDef) -> Any:
    try:
        samples = json.loads((flow.path / "samples.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if isinstance(samples, list):
        return samples[0] if samples else {}
    return samples if isinstance(samples, dict) else {}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def build_swagger(
    flow: FlowDef, included: tuple[str, ...] | None = None, name: str | None = None
) -> dict[str, Any]:
    """OpenAPI 3.0 for ``POST /score`` and ``POST /feedback``.

    The outputs listed are the flow's, less ``evaluation_only`` ones and, when given, those
    not in ``included`` (PROMPTFLOW_RESPONSE_INCLUDED_FIELDS). ``name`` is the flow's name
    for clients (a deployed flow runs from a snapshot folder named by its content hash).
    """
    name = name or flow.name
    outputs = [
        name
        for name, spec in flow.outputs.items()
        if not spec.evaluation_only and (included is None or name in included)
    ]
    flex = "flowport.flex" in flow.raw
    inputs = {
        name: _schema(spec.type, spec.description, _flex_default(spec.default) if flex else spec.default)
        for name, spec in flow.inputs.items()
    }
    answers = {name: _schema(flow.outputs[name].type, flow.outputs[name].description) for name in outputs}
    answer_schema: dict[str, Any] = {"type": "object", "properties": answers}
    if flex and not answers:  # a flex entry without declared outputs: any object
        answer_schema = {"type": "object"}
    info: dict[str, Any] = {
        "title": f"Promptflow[{name}] API",
        "version": "1.0.0",
        "x-flow-name": name,
    }
    if flow.is_chat:
        info.update(
            {
                "x-chat-history": flow.chat_history,
                "x-chat-input": flow.chat_input,
                "x-flow-type": "chat",
                "x-chat-output": flow.chat_output,
            }
        )
    request_schema: dict[str, Any] = {"type": "object"}
    if inputs:
        request_schema.update({"properties": inputs, "required": list(flow.inputs)})
    score_body = _json_content(request_schema)
    score_body["application/json"]["example"] = _example(flow)
    return {
        "openapi": "3.0.0",
        "info": info,
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearerAuth": []}],
        "paths": {
            "/score": {
                "post": {
                    "summary": f"run promptflow: {name} with an given input",
                    "requestBody": {
                        "description": "promptflow input data",
                        "required": bool(inputs),
                        "content": score_body,
                    },
                    "responses": {
                        "200": {
                            "description": "successful operation",
                            "content": _json_content(answer_schema),
                        },
                        **_ERRORS,
                    },
                }
            },
            "/feedback": {
                "post": {
                    "summary": "collect promptflow feedback",
                    "requestBody": {
                        "description": "promptflow feedback data",
                        "required": True,
                        "content": _json_content(_OBJECT),
                    },
                    "responses": {
                        "200": {"description": "successful operation", "content": _json_content(_OBJECT)},
                        **_ERRORS,
                    },
                },
                "parameters": [
                    {
                        "name": "flatten",
                        "in": "query",
                        "description": "flatten the feedback data into traced data",
                        "required": False,
                        "schema": {"type": "boolean"},
                    }
                ],
            },
        },
    }
