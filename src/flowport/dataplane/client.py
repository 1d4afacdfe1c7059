"""The control plane's side of the data plane's private API (``agent.py``)."""

from __future__ import annotations

from typing import Any

import httpx

from flowport.dataplane import wire
from flowport.gateway import EndpointRoute
from flowport.runtime.autoscale import ScalingStatus
from flowport.runtime.base import DeploymentFailed, DeploymentKey, DeploymentPlan, InstanceState

CALL_TIMEOUT = 30.0


class DataPlaneUnavailable(Exception):
    """The data plane did not answer (it is starting or stopping)."""


class DataPlaneFailed(Exception):
    """The data plane answered with an error of its own (a bug, or a call it refused)."""


class DataPlaneClient:
    """Routes to the gateway, plans to the runtime, over the data plane's Unix socket.

    ``apply`` waits as long as the roll-out takes (installing requirements can take minutes).
    """

    def __init__(self, socket_path: str, token: str) -> None:
        self.socket_path = socket_path
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            base_url="http://dataplane",
            headers={"authorization": f"Bearer {token}"},
            timeout=CALL_TIMEOUT,
        )

    async def _call(self, method: str, path: str, *, body: Any = None, **options: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=body, **options)
        except httpx.TransportError as exc:
            raise DataPlaneUnavailable(
                f"the data plane at {self.socket_path} did not answer: {exc}"
            ) from None
        if response.status_code >= 400 and response.status_code != 424:  # 424: a failed roll-out
            raise DataPlaneFailed(
                f"the data plane answered {method} {path} with {response.status_code}: {response.text}"
            )
        return response

    # -- the gateway ----------------------------------------------------------------------------

    async def publish(self, route: EndpointRoute) -> None:
        await self._call("PUT", f"/routes/{route.name}", body=wire.route_to_json(route))

    async def withdraw(self, endpoint: str) -> None:
        await self._call("DELETE", f"/routes/{endpoint}")

    async def routes(self) -> list[str]:
        return (await self._call("GET", "/routes")).json()

    async def stats(self, endpoint: str) -> dict[str, Any]:
        return (await self._call("GET", f"/stats/{endpoint}")).json()

    async def compare(self, endpoint: str, a: str, b: str) -> dict[str, Any]:
        return (await self._call("GET", f"/compare/{endpoint}", params={"a": a, "b": b})).json()

    async def forget_pairs(self, endpoint: str) -> None:
        await self._call("DELETE", f"/compare/{endpoint}")

    # -- the runtime ----------------------------------------------------------------------------

    async def apply(self, plan: DeploymentPlan) -> None:
        """Bring the deployment to ``plan``; ``DeploymentFailed`` when it cannot become ready."""
        path = f"/deployments/{plan.key.endpoint}/{plan.key.deployment}"
        response = await self._call("PUT", path, body=wire.plan_to_json(plan), timeout=None)
        if response.status_code == 424:
            failure = response.json()
            raise DeploymentFailed(failure["reason"], failure.get("log_tail"))

    async def remove(self, key: DeploymentKey) -> None:
        await self._call("DELETE", f"/deployments/{key.endpoint}/{key.deployment}", timeout=None)

    async def deployments(self) -> list[DeploymentKey]:
        keys = (await self._call("GET", "/deployments")).json()
        return [DeploymentKey(k["endpoint"], k["deployment"]) for k in keys]

    async def instances(self, key: DeploymentKey) -> list[InstanceState]:
        response = await self._call("GET", f"/deployments/{key.endpoint}/{key.deployment}/instances")
        return wire.instances_from_json(response.json())

    async def scaling(self, key: DeploymentKey) -> ScalingStatus | None:
        """An autoscaled deployment's count and the scaling events the data plane keeps."""
        response = await self._call("GET", f"/deployments/{key.endpoint}/{key.deployment}/scaling")
        data = response.json()
        return ScalingStatus.from_json(data) if data is not None else None

    async def logs(self, key: DeploymentKey, lines: int) -> list[str]:
        path = f"/deployments/{key.endpoint}/{key.deployment}/logs"
        return (await self._call("GET", path, params={"lines": lines})).json()

    async def aclose(self) -> None:
        await self._http.aclose()
