"""Errors the gateway answers itself: always JSON ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response


class Refusal(Exception):
    """A request the gateway answers without (or instead of) an instance's answer."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_response(refusal: Refusal, headers: Mapping[str, str]) -> Response:
    """The JSON answer for ``refusal``, with ``headers`` (request id, deployment) added."""
    return Response(
        error_body(refusal.code, refusal.message),
        refusal.status,
        {**headers, **refusal.headers},
        media_type="application/json",
    )


def endpoint_not_found(endpoint: str) -> Refusal:
    return Refusal(
        404,
        "EndpointNotFound",
        f"No endpoint named {endpoint!r} is served here. "
        "Check the name in the URL (`flowport online-endpoint list` shows them).",
    )


def route_not_found(path: str) -> Refusal:
    return Refusal(
        404,
        "NotFound",
        f"No gateway route {path!r}. An endpoint serves POST /endpoints/<name>/score, "
        "GET /endpoints/<name>/swagger.json and, for chat flows, POST /endpoints/<name>/v1/chat/completions.",
    )


def method_not_allowed(method: str, allowed: str) -> Refusal:
    return Refusal(
        405, "MethodNotAllowed", f"{method} is not supported here; use {allowed}.", {"allow": allowed}
    )


def unauthorized(message: str) -> Refusal:
    return Refusal(401, "Unauthorized", message, {"www-authenticate": "Bearer"})


def deployment_not_found(endpoint: str, name: str, known: list[str]) -> Refusal:
    names = ", ".join(sorted(known)) or "none"
    return Refusal(
        404,
        "DeploymentNotFound",
        f"Endpoint {endpoint!r} has no deployment named {name!r} (its deployments: {names}). "
        "Fix the azureml-model-deployment header or leave it out to follow the traffic split.",
    )


def no_traffic(endpoint: str) -> Refusal:
    return Refusal(
        404,
        "NoDeploymentWithTraffic",
        f"No deployment of endpoint {endpoint!r} receives traffic. Give one traffic with "
        f'`flowport online-endpoint update -n {endpoint} --traffic "blue=100"`, or pick a deployment '
        "with the header azureml-model-deployment: <name>.",
    )


def too_many_requests(deployment: str, limit: int) -> Refusal:
    return Refusal(
        429,
        "TooManyRequests",
        f"Deployment {deployment!r} already has {limit} requests in flight "
        "(2 x max_concurrent_requests_per_instance x instance_count). Retry later, "
        "or raise instance_count or request_settings.max_concurrent_requests_per_instance.",
        {"retry-after": "1"},
    )


def no_instance(deployment: str) -> Refusal:
    return Refusal(
        503,
        "ServiceUnavailable",
        f"Deployment {deployment!r} has no ready instance right now. Retry shortly; if this lasts, "
        "check `flowport online-deployment get-logs` for why its instances do not start.",
    )


def bad_gateway(deployment: str) -> Refusal:
    return Refusal(
        502,
        "BadGateway",
        f"No instance of deployment {deployment!r} could be reached. Retry shortly; if this lasts, "
        "check `flowport online-deployment get-logs`.",
    )


def timed_out(deployment: str, seconds: float) -> Refusal:
    return Refusal(
        408,
        "RequestTimeout",
        f"Deployment {deployment!r} did not answer within {seconds:g} s. Make the flow faster or raise "
        "request_settings.request_timeout_ms of the deployment.",
    )


def internal_error() -> Refusal:
    return Refusal(
        500,
        "InternalServerError",
        "The gateway failed to answer this request; the server log has the details. Retry; "
        "if it happens again, report it with the x-request-id.",
    )


def body_too_large(limit: int) -> Refusal:
    return Refusal(
        413,
        "RequestTooLarge",
        f"The request body is larger than {limit} bytes, the most the gateway accepts. Send less data.",
    )
