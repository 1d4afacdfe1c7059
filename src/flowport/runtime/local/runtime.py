"""``LocalRuntime``: the ``Runtime`` of supervised processes on this machine."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from flowport.runtime.base import DeploymentKey, DeploymentPlan, InstanceState, ReadyListener
from flowport.runtime.local.deployment import Deployment
from flowport.runtime.local.logs import LogFiles
from flowport.runtime.local.supervisor import ManagedInstance
from flowport.runtime.local.venvs import VenvCache

log = logging.getLogger("flowport.runtime.local")


class LocalRuntime:
    """Runs each instance as a process serving on a Unix socket, probes and restarts it.

    State lives under ``state_dir``: ``logs/<endpoint>/<deployment>/<instance>.log`` and
    ``venvs/<hash>``. Sockets live in a short per-runtime folder under ``/tmp`` (a Unix
    socket path must stay under ~100 characters), removed by ``close``.
    """

    def __init__(self, state_dir: Path, *, python: str = sys.executable, drain_seconds: float = 30) -> None:
        self.state_dir = Path(state_dir)
        self.python = python
        self.drain_seconds = drain_seconds
        self._listener: ReadyListener | None = None
        self._deployments: dict[DeploymentKey, Deployment] = {}
        self._logs = LogFiles(self.state_dir / "logs")
        self._venvs = VenvCache(self.state_dir / "venvs", python)
        self._socket_dir: str | None = None
        self._socket_numbers = itertools.count(1)
        self._closed = False

    def set_listener(self, listener: ReadyListener) -> None:
        self._listener = listener

    async def apply(self, plan: DeploymentPlan) -> None:
        if self._closed:
            raise RuntimeError("the runtime is closed")
        deployment = self._deployment(plan.key)
        async with deployment.lock:
            python = await self._venvs.python_for(plan.requirements) if plan.requirements else self.python
            await deployment.apply(plan, python)

    async def remove(self, key: DeploymentKey) -> None:
        deployment = self._deployments.get(key)
        if deployment is None:
            return
        async with deployment.lock:
            await deployment.remove()

    def deployments(self) -> list[DeploymentKey]:
        return [key for key, deployment in self._deployments.items() if deployment.plan is not None]

    def instances(self, key: DeploymentKey) -> list[InstanceState]:
        deployment = self._deployments.get(key)
        return deployment.states() if deployment else []

    def logs(self, key: DeploymentKey, lines: int) -> list[str]:
        return self._logs.tail(key, lines)

    async def close(self) -> None:
        """Drain every instance of every deployment in parallel; remove the socket folder."""
        self._closed = True
        await asyncio.gather(*(d.close() for d in self._deployments.values()))
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    # -- internals ----------------------------------------------------------------------

    def _deployment(self, key: DeploymentKey) -> Deployment:
        deployment = self._deployments.get(key)
        if deployment is None:
            deployment = Deployment(
                key,
                new_instance=lambda plan, python, on_change: self._new_instance(key, plan, python, on_change),
                publish=self._publish,
                drain_seconds=self.drain_seconds,
            )
            self._deployments[key] = deployment
        return deployment

    def _new_instance(
        self, key: DeploymentKey, plan: DeploymentPlan, python: str, on_change: Callable[[], None]
    ) -> ManagedInstance:
        live = {m.log_path for d in self._deployments.values() for m in d.members}
        instance_id = secrets.token_hex(4)
        return ManagedInstance(
            id=instance_id,
            plan=plan,
            python=python,
            log_path=self._logs.new_file(key, instance_id, live),
            new_socket=self._new_socket,
            on_change=on_change,
        )

    def _new_socket(self) -> str:
        """A fresh, short socket path (every spawn gets its own, so addresses never repeat)."""
        if self._socket_dir is None:
            self._socket_dir = tempfile.mkdtemp(prefix="fp-", dir="/tmp")
        return f"{self._socket_dir}/{next(self._socket_numbers)}.sock"

    def _publish(self, key: DeploymentKey, addresses: list[str]) -> None:
        if self._listener is None:
            return
        try:
            self._listener(key, list(addresses))
        except Exception:
            log.exception("the ready listener failed for %s", key)
