"""The OpenAPI document of a flow's scoring route, as prompt flow's serving app describes it."""

from __future__ import annotations

import json
from typing import Any

from flowport.flow import MISSING, FlowDef, ValueType

_SCHEMA_TYPES = {
    ValueType.INT: {"type": "integer", "format": "int64"},
    ValueType.DOUBLE: {"type": "number", "format": "double"},
    ValueType.BOOL: {"type": "boolean"},
    ValueType.STRING: {"type": "string"},
    ValueType.LIST: {"type": "array", "items": {}},
    ValueType.OBJECT: {"type": "object", "additionalProperties": {}},
    ValueType.IMAGE: {"type": "string"},
}


def _samples(flow: FlowDef) -> Any:
    path = flow.path / "samples.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_swagger(flow: FlowDef, outputs: list[str]) -> dict[str, Any]:
    """OpenAPI 3.0 for ``POST /score`` with the flow's inputs, the given outputs and chat markers."""
    properties: dict[str, Any] = {}
    for name, spec in flow.inputs.items():
        schema = dict(_SCHEMA_TYPES[spec.type])
        if spec.default is not MISSING:
            schema["default"] = spec.default
        if spec.description:
            schema["description"] = spec.description
        if spec.enum:
            schema["enum"] = list(spec.enum)
        properties[name] = schema
    required = [name for name, spec in flow.inputs.items() if spec.required]
    request_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        request_schema["required"] = required
    output_props = {
        name: dict(_SCHEMA_TYPES[flow.outputs[name].type]) for name in outputs if name in flow.outputs
    }
    info: dict[str, Any] = {
        "title": f"Promptflow[{flow.name}] API",
        "version": "1.0.0",
        "x-flow-name": flow.name,
    }
    if flow.is_chat:
        info.update(
            {
                "x-flow-type": "chat",
                "x-chat-input": flow.chat_input,
                "x-chat-history": flow.chat_history,
                "x-chat-output": flow.chat_output,
            }
        )
    request_body: dict[str, Any] = {
        "description": "The flow's inputs; any input with a default may be left out.",
        "required": True,
        "content": {"application/json": {"schema": request_schema}},
    }
    example = _samples(flow)
    if example is not None:
        request_body["content"]["application/json"]["example"] = example
    return {
        "openapi": "3.0.0",
        "info": info,
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearerAuth": []}],
        "paths": {
            "/score": {
                "post": {
                    "summary": f"Run the {flow.name} flow",
                    "requestBody": request_body,
                    "responses": {
                        "200": {
                            "description": "The flow's outputs",
                            "content": {
                                "application/json": {"schema": {"type": "object", "properties": output_props}}
                            },
                        },
                        "400": {"description": "Invalid input or an error in a tool"},
                        "406": {"description": "The Accept header names no supported media type"},
                        "408": {"description": "The flow ran past the request timeout"},
                        "413": {"description": "The body is larger than allowed"},
                        "429": {"description": "Too many requests in flight; retry after Retry-After"},
                        "500": {"description": "An error in flowport itself"},
                    },
                }
            }
        },
    }
