"""``LocalRuntime``: the ``Runtime`` of supervised processes on this machine."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from flowport.runtime.base import DeploymentKey, DeploymentPlan
from flowport.runtime.local.deployment import SupervisedRuntime
from flowport.runtime.local.isolation import Isolation
from flowport.runtime.local.logs import LogFiles, masking
from flowport.runtime.local.supervisor import ManagedInstance
from flowport.runtime.local.venvs import VenvCache

log = logging.getLogger("flowport.runtime.local")


class LocalRuntime(SupervisedRuntime):
    """Runs each instance as a process serving on a Unix socket, probes and restarts it.

    State lives under ``state_dir``: ``logs/<endpoint>/<deployment>/<instance>.log`` and
    ``venvs/<hash>``. Each instance process runs in a workspace of its own (socket, ``HOME``,
    ``TMPDIR``) in a short per-runtime folder under ``/tmp``, removed by ``close``, with the
    minimal environment and (as root) the unprivileged user that ``isolation`` decides.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        python: str = sys.executable,
        drain_seconds: float = 30,
        isolation: Isolation | None = None,
    ) -> None:
        super().__init__(drain_seconds)
        self.state_dir = Path(state_dir)
        self.python = python
        self._logs = LogFiles(self.state_dir / "logs")
        self.isolation = isolation or Isolation.from_environment()
        self._venvs = VenvCache(self.state_dir / "venvs", python, self.isolation)
        self._closed = False

    async def apply(self, plan: DeploymentPlan) -> None:
        if self._closed:
            raise RuntimeError("the runtime is closed")
        deployment = self._deployment(plan)
        async with deployment.lock:
            python = self.python
            if plan.requirements or plan.pip_requirements:
                progress = self._logs.provisioning(plan.key)
                built = await self._venvs.python_for(plan.requirements, plan.pip_requirements, progress)
                venv = Path(built).parent.parent
                python = str(await self.isolation.readable(venv) / "bin" / "python")
            await self.isolation.check_python(python)
            config = plan.config
            source = str(await self.isolation.readable(Path(config.source)))
            model_dir = str(await self.isolation.readable(Path(config.model_dir))) if config.model_dir else ""
            config = replace(config, source=source, model_dir=model_dir)
            await deployment.apply(replace(plan, config=config), python)

    def logs(self, key: DeploymentKey, lines: int) -> list[str]:
        return list(map(masking(self._masked.get(key, ())), self._logs.tail(key, lines)))

    async def close(self) -> None:
        """Drain every instance of every deployment in parallel; remove the instances' folder."""
        self._closed = True
        await asyncio.gather(*(d.close() for d in self._deployments.values()))
        self.isolation.close()

    # -- internals ----------------------------------------------------------------------

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
            isolation=self.isolation,
            on_change=on_change,
        )
