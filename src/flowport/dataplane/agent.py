"""The data plane's private API: how the control plane drives the gateway and the runtime.

Served on a Unix socket in ``FLOWPORT_HOME/run`` (a folder only the owner can enter), never
on a network port. Every call is small: routes in, plans in, instance states and log lines
out. A plan's roll-out runs to its end even if the control plane that asked goes away.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Coroutine
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flowport.dataplane import wire
from flowport.gateway import Gateway
from flowport.runtime.base import DeploymentFailed, DeploymentKey, Runtime

log = logging.getLogger("flowport.dataplane")


class TokenCheck:
    """Only the control plane holds the token (the socket's folder is private too)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            presented = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(presented, self.expected):
                await JSONResponse({"error": "the data plane's token is missing or wrong"}, 401)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def build_agent(gateway: Gateway, runtime: Runtime, token: str) -> ASGIApp:
    published: set[str] = set()
    running: set[asyncio.Task[None]] = set()

    def detached(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of its own: a change finishes even when the control plane that asked goes away."""
        task = asyncio.get_running_loop().create_task(work)
        running.add(task)
        task.add_done_callback(finished)
        return task

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("a deployment change ended with: %s", task.exception())

    def key_of(request: Request) -> DeploymentKey:
        return DeploymentKey(request.path_params["endpoint"], request.path_params["name"])

    async def put_route(request: Request) -> Response:
        route = wire.route_from_json(await request.json())
        gateway.publish(route)
        published.add(route.name)
        return JSONResponse({})

    async def delete_route(request: Request) -> Response:
        name = request.path_params["endpoint"]
        gateway.withdraw(name)
        published.discard(name)
        return JSONResponse({})

    async def list_routes(request: Request) -> Response:
        return JSONResponse(sorted(published))

    async def apply(request: Request) -> Response:
        plan = wire.plan_from_json(await request.json())
        try:
            await asyncio.shield(detached(runtime.apply(plan)))
        except DeploymentFailed as exc:
            return JSONResponse({"reason": exc.reason, "log_tail": exc.log_tail}, status_code=424)
        return JSONResponse({})

    async def remove(request: Request) -> Response:
        await asyncio.shield(detached(runtime.remove(key_of(request))))
        return JSONResponse({})

    async def list_deployments(request: Request) -> Response:
        keys = [{"endpoint": k.endpoint, "deployment": k.deployment} for k in runtime.deployments()]
        return JSONResponse(keys)

    async def instances(request: Request) -> Response:
        return JSONResponse(wire.instances_to_json(runtime.instances(key_of(request))))

    async def logs(request: Request) -> Response:
        lines = int(request.query_params.get("lines", "100"))
        return JSONResponse(await asyncio.to_thread(runtime.logs, key_of(request), lines))

    async def stats(request: Request) -> Response:
        return JSONResponse(gateway.stats(request.path_params["endpoint"]))

    async def failed(request: Request, exc: Exception) -> Response:
        log.exception("data plane call %s %s failed", request.method, request.url.path)
        body: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
        return JSONResponse(body, status_code=500, headers={"connection": "close"})

    one = "/deployments/{endpoint}/{name}"
    app = Starlette(
        routes=[
            Route("/routes", list_routes),
            Route("/routes/{endpoint}", put_route, methods=["PUT"]),
            Route("/routes/{endpoint}", delete_route, methods=["DELETE"]),
            Route("/deployments", list_deployments),
            Route(one, apply, methods=["PUT"]),
            Route(one, remove, methods=["DELETE"]),
            Route(one + "/instances", instances),
            Route(one + "/logs", logs),
            Route("/stats/{endpoint}", stats),
        ],
        exception_handlers={Exception: failed},
    )
    return TokenCheck(app, token)
