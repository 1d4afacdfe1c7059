"""``RayRuntime``: the ``Runtime`` of a Ray cluster (a ``ray`` compute).

The data plane connects to the cluster as a Ray driver and runs each instance as a Ray actor
(``actor.py``) placed on the node its deployment uses least. The actor starts flowport's own
instance server on its node; the gateway forwards to it over HTTP, so the request path is the
local one plus the network hop (Ray Serve's Python proxy is not on it). The flow travels as a
zip in the object store, its ``requirements.txt`` as the actors' ``pip`` runtime environment,
and its config (connections, secret variables) sealed to each actor's own key (``sealing.py``).
Scaling, rolling updates and rollback are the local runtime's (``local/deployment.py``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from flowport.instance_keys import derive
from flowport.runtime.base import ComputeTarget, DeploymentFailed, DeploymentKey, DeploymentPlan
from flowport.runtime.local.deployment import SupervisedRuntime
from flowport.runtime.local.logs import LogFiles
from flowport.runtime.ray.instance import RayInstance

log = logging.getLogger("flowport.runtime.ray")

NAMESPACE = "flowport"
REACH_SECONDS = 10.0
_connected: str | None = None
"""The cluster this process is a driver of: Ray allows one per process."""


async def connect(compute: ComputeTarget) -> None:
    """Join the compute's cluster as a driver (once per process); ``DeploymentFailed`` if it cannot."""
    global _connected
    if _connected == compute.address and ray.is_initialized():
        return
    if _connected is not None and ray.is_initialized():
        raise DeploymentFailed(
            f"compute {compute.name!r} is the Ray cluster at {compute.address}, but this server already "
            f"drives the one at {_connected}: one flowport server runs on one Ray cluster"
        )
    host, _, port = compute.address.removeprefix("ray://").rpartition(":")
    try:  # ray.init waits minutes for a head that is not there: ask the port first
        reach = asyncio.open_connection(host.strip("[]"), int(port))
        _, writer = await asyncio.wait_for(reach, REACH_SECONDS)
        writer.close()
    except (OSError, ValueError, TimeoutError) as exc:
        raise DeploymentFailed(
            f"cannot join the Ray cluster of compute {compute.name!r}: nothing answers at "
            f"{compute.address} ({exc or 'timed out'}); is `ray start --head` running there?"
        ) from None
    try:
        await asyncio.to_thread(
            ray.init,
            address=compute.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except Exception as exc:  # ConnectionError, a version mismatch, a bad address...
        raise DeploymentFailed(
            f"cannot join the Ray cluster of compute {compute.name!r} at {compute.address}: {exc} "
            "(is `ray start --head` running there, with the same Ray and Python versions?)"
        ) from None
    _connected = compute.address


def requirements_env(plan: DeploymentPlan) -> dict[str, Any] | None:
    """The flow's ``requirements.txt`` and the conda file's pip lines as a Ray runtime environment
    (a virtualenv Ray builds on each node)."""
    lines = []
    if plan.requirements is not None:
        lines = [line.strip() for line in plan.requirements.read_text(encoding="utf-8").splitlines()]
    packages = [line for line in [*lines, *plan.pip_requirements] if line and not line.startswith("#")]
    return {"pip": packages} if packages else None


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


class RayRuntime(SupervisedRuntime):
    def __init__(
        self,
        compute: ComputeTarget,
        state_dir: Path,
        *,
        instance_secret: bytes,
        drain_seconds: float = 30,
    ) -> None:
        super().__init__(drain_seconds)
        self.compute = compute
        self.instance_secret = instance_secret
        """What each deployment's instance key derives from (``instance_keys.py``): the gateway's too."""
        self._logs = LogFiles(Path(state_dir) / "logs")
        self._flows: dict[str, tuple[ray.ObjectRef, dict[str, Any] | None]] = {}
        """Per revision: the flow's zip in the object store and its runtime environment."""
        self._closed = False

    async def apply(self, plan: DeploymentPlan) -> None:
        if self._closed:
            raise RuntimeError("the runtime is closed")
        if plan.config.model_dir:
            raise DeploymentFailed(
                f"compute {self.compute.name!r}: a scoring-script deployment with a model runs on the "
                "local compute only for now (its model folder is not shipped to Ray nodes)"
            )
        await connect(self.compute)
        deployment = self._deployment(plan)
        async with deployment.lock:
            if plan.revision not in self._flows:
                data = await asyncio.to_thread(zip_folder, Path(plan.config.source))
                self._flows[plan.revision] = (ray.put(data), requirements_env(plan))
            await deployment.apply(plan, "")
            live = {m.revision for d in self._deployments.values() for m in d.members}
            for revision in set(self._flows) - live - {plan.revision}:
                del self._flows[revision]

    def logs(self, key: DeploymentKey, lines: int) -> list[str]:
        """Each instance's last lines, read on its node (the agent calls this in a thread)."""
        deployment = self._deployments.get(key)
        result: list[str] = []
        for member in deployment.members if deployment else []:
            assert isinstance(member, RayInstance)
            result += [f"[{member.id} on {member.node[:12]}] {line}" for line in member.live_tail(lines)]
        return result[-lines:]

    async def close(self) -> None:
        global _connected
        self._closed = True
        await asyncio.gather(*(d.close() for d in self._deployments.values()))
        if ray.is_initialized():
            await asyncio.to_thread(ray.shutdown)
        _connected = None

    # -- internals ----------------------------------------------------------------------

    def _new_instance(
        self, key: DeploymentKey, plan: DeploymentPlan, python: str, on_change: Callable[[], None]
    ) -> RayInstance:
        live = {m.log_path for d in self._deployments.values() for m in d.members}
        instance_id = secrets.token_hex(4)
        flow, runtime_env = self._flows[plan.revision]
        return RayInstance(
            id=instance_id,
            plan=plan,
            log_path=self._logs.new_file(key, instance_id, live),
            on_change=on_change,
            flow=flow,
            runtime_env=runtime_env,
            place=lambda instance: self._place(key, instance),
            access_key=derive(self.instance_secret, key.endpoint, key.deployment),
        )

    async def _place(self, key: DeploymentKey, instance: RayInstance) -> str:
        """The alive node with the fewest instances of this deployment's revision (SPREAD, one at a time)."""
        nodes = sorted(n["NodeID"] for n in await asyncio.to_thread(ray.nodes) if n.get("Alive"))
        if not nodes:
            raise DeploymentFailed(f"the Ray cluster of compute {self.compute.name!r} has no alive node")
        members = self._deployments[key].members
        others = [m for m in members if m is not instance and isinstance(m, RayInstance)]
        same = Counter(m.node for m in others if m.revision == instance.revision)
        used = Counter(m.node for m in others)
        # the new revision spread first (a rolling update ends spread), then all the deployment's
        return min(nodes, key=lambda node: (same[node], used[node]))
