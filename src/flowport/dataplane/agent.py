"""The data plane's private API: how the control plane drives the gateway and the runtime.

Served on a Unix socket in ``FLOWPORT_HOME/run`` (a folder only the owner can enter), never
on a network port, and only to the holder of a token the control plane child alone is given.
Every call is small: routes in, plans in, instance states and log lines out. A plan's
roll-out runs to its end even if the control plane that asked goes away.
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
from starlette.types import Receive, Scope, Send

from flowport.dataplane import wire
from flowport.gateway import Gateway
from flowport.gateway.compare import report
from flowport.runtime.base import DeploymentFailed, DeploymentKey, Runtime

log = logging.getLogger("flowport.dataplane")


class Agent:
    """An ASGI app over the gateway and the runtime; ``close()`` waits for changes under way."""

    def __init__(self, gateway: Gateway, runtime: Runtime, token: str) -> None:
        self.gateway = gateway
        self.runtime = runtime
        self.expected = f"Bearer {token}".encode()
        self.published: set[str] = set()
        self.running: set[asyncio.Task[None]] = set()
        one = "/deployments/{endpoint}/{name}"
        self.app = Starlette(
            routes=[
                Route("/routes", self.list_routes),
                Route("/routes/{endpoint}", self.put_route, methods=["PUT"]),
                Route("/routes/{endpoint}", self.delete_route, methods=["DELETE"]),
                Route("/deployments", self.list_deployments),
                Route(one, self.apply, methods=["PUT"]),
                Route(one, self.remove, methods=["DELETE"]),
                Route(one + "/instances", self.instances),
                Route(one + "/logs", self.logs),
                Route(one + "/scaling", self.scaling),
                Route("/stats/{endpoint}", self.stats),
                Route("/compare/{endpoint}", self.compare),
                Route("/compare/{endpoint}", self.forget_pairs, methods=["DELETE"]),
            ],
            exception_handlers={Exception: self.failed},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            presented = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(presented, self.expected):
                refusal = JSONResponse({"error": "the data plane's token is missing or wrong"}, 401)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def close(self) -> None:
        """Let the roll-outs and removals under way finish (the server is stopping)."""
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)

    def _detached(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of its own: a change finishes even when the control plane that asked goes away."""
        task = asyncio.get_running_loop().create_task(work)
        self.running.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("a deployment change ended with: %s", task.exception())

    @staticmethod
    def _key(request: Request) -> DeploymentKey:
        return DeploymentKey(request.path_params["endpoint"], request.path_params["name"])

    # -- the gateway --------------------------------------------------------------------------

    async def put_route(self, request: Request) -> Response:
        route = wire.route_from_json(await request.json())
        self.gateway.publish(route)
        self.published.add(route.name)
        return JSONResponse({})

    async def delete_route(self, request: Request) -> Response:
        name = request.path_params["endpoint"]
        self.gateway.withdraw(name)
        self.published.discard(name)
        return JSONResponse({})

    async def list_routes(self, request: Request) -> Response:
        return JSONResponse(sorted(self.published))

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.gateway.stats(request.path_params["endpoint"]))

    async def compare(self, request: Request) -> Response:
        """The report on two deployments' recorded answers to the same mirrored requests."""
        endpoint, query = request.path_params["endpoint"], request.query_params
        pairs = self.gateway.comparisons.pairs(endpoint)
        found = await asyncio.to_thread(report, endpoint, pairs, query["a"], query["b"])
        return JSONResponse(found)

    async def forget_pairs(self, request: Request) -> Response:
        self.gateway.comparisons.forget(request.path_params["endpoint"])
        return JSONResponse({})

    # -- the runtime --------------------------------------------------------------------------

    async def apply(self, request: Request) -> Response:
        plan = wire.plan_from_json(await request.json())
        try:
            await asyncio.shield(self._detached(self.runtime.apply(plan)))
        except DeploymentFailed as exc:
            return JSONResponse({"reason": exc.reason, "log_tail": exc.log_tail}, status_code=424)
        return JSONResponse({})

    async def remove(self, request: Request) -> Response:
        await asyncio.shield(self._detached(self.runtime.remove(self._key(request))))
        return JSONResponse({})

    async def list_deployments(self, request: Request) -> Response:
        keys = self.runtime.deployments()
        return JSONResponse([{"endpoint": k.endpoint, "deployment": k.deployment} for k in keys])

    async def instances(self, request: Request) -> Response:
        return JSONResponse(wire.instances_to_json(self.runtime.instances(self._key(request))))

    async def scaling(self, request: Request) -> Response:
        status = self.runtime.scaling(self._key(request))
        return JSONResponse(status.to_json() if status is not None else None)

    async def logs(self, request: Request) -> Response:
        lines = int(request.query_params.get("lines", "100"))
        return JSONResponse(await asyncio.to_thread(self.runtime.logs, self._key(request), lines))

    async def failed(self, request: Request, exc: Exception) -> Response:
        log.exception("data plane call %s %s failed", request.method, request.url.path)
        body = {"error": f"{type(exc).__name__}: {exc}"}
        return JSONResponse(body, status_code=500, headers={"connection": "close"})
