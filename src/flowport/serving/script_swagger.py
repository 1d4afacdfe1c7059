"""The OpenAPI document of a scoring script: ``inference-schema``'s schemas when ``run`` has them.

With ``@input_schema`` / ``@output_schema`` (and the ``inference-schema`` package in the
deployment's environment) the request and answer schemas are the decorators'; otherwise
both are any JSON value, as the inference server documents an undecorated ``run``.
"""

from __future__ import annotations

from typing import Any

from flowport.serving.user_script import InputMode, UserScript

_ANY: dict[str, Any] = {}


def _schemas(script: UserScript) -> tuple[dict[str, Any], dict[str, Any]]:
    if script.mode != InputMode.SCHEMA:
        return _ANY, _ANY
    try:
        from inference_schema.schema_util import (  # type: ignore[import-not-found]
            get_input_schema,
            get_output_schema,
        )

        return dict(get_input_schema(script.run) or {}), dict(get_output_schema(script.run) or {})
    except Exception:  # an inference-schema version that names these otherwise
        return _ANY, _ANY


def build_script_swagger(script: UserScript, name: str) -> dict[str, Any]:
    """OpenAPI 3.0 for ``POST /score`` (and the liveness route ``GET /``)."""
    request_schema, answer_schema = _schemas(script)
    errors = {
        "400": {"description": "The request cannot be handed to run()"},
        "408": {"description": "run() did not finish within the request timeout"},
        "429": {"description": "Too many requests in flight"},
        "500": {"description": "run() failed (x-ms-run-function-failed: True)"},
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": f"{name} scoring script", "version": "1.0", "x-scoring-script": script.name},
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearerAuth": []}],
        "paths": {
            "/": {"get": {"summary": "liveness", "responses": {"200": {"description": "Healthy"}}}},
            "/score": {
                "post": {
                    "summary": "run the scoring script",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": request_schema}},
                    },
                    "responses": {
                        "200": {
                            "description": "what run() returned",
                            "content": {"application/json": {"schema": answer_schema}},
                        },
                        **errors,
                    },
                }
            },
        },
    }
