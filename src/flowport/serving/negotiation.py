"""Reading a request: the Accept header, the body, the request ids."""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from flowport.engine.errors import ExecutionError, user_error
from flowport.flow import FlowDef

SUPPORTED = "application/json"


class Reply(Enum):
    JSON = "json"
    EVENTS = "events"


def negotiate(accept: str | None) -> Reply | None:
    """JSON unless the client asks for server-sent events; None when nothing offered fits."""
    if not accept or not accept.strip():
        return Reply.JSON
    types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    if "text/event-stream" in types:
        return Reply.EVENTS
    if any(t in ("application/json", "*/*", "application/*") for t in types):
        return Reply.JSON
    return None


def not_acceptable(accept: str) -> ExecutionError:
    types = ", ".join(part.split(";", 1)[0].strip() for part in accept.split(",") if part.strip())
    return user_error(
        f"Media type {types} in Accept header is not acceptable. Supported media type(s) - {SUPPORTED}",
        "NotAcceptable",
    )


def parse_inputs(body: bytes, flow: FlowDef) -> dict[str, Any]:
    """The flow inputs a request body carries; a non-JSON body feeds a flow's only input."""
    if not flow.inputs:
        return {}
    try:
        data = orjson.loads(body.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError:
        if len(flow.inputs) == 1:
            try:
                return {next(iter(flow.inputs)): body.decode("utf-8")}
            except UnicodeDecodeError:
                raise user_error("The request body is not valid UTF-8 text.", "InvalidRequest") from None
        raise user_error(
            "Promptflow executor received non json data, but there's more than 1 input fields, "
            "please use json request data instead.",
            "InvalidRequest",
        ) from None
    if data is None and not any(spec.required for spec in flow.inputs.values()):
        return {}
    if not isinstance(data, dict):
        raise user_error(
            f"The request body must be a JSON object of input names to values, got {type(data).__name__}.",
            "InvalidRequest",
        )
    return data


def check_required(inputs: dict[str, Any], flow: FlowDef) -> None:
    """Every input without a default must be given: prompt flow's server says it this way."""
    missing = [name for name, spec in flow.inputs.items() if spec.required and name not in inputs]
    if missing:
        raise user_error(
            f"Required input fields {missing} are missing in request data {inputs!r}", "InputNotFound"
        )
