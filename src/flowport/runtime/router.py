"""``ComputeRouter``: one ``Runtime`` in front of the runtime of each compute.

The data plane holds one router. A plan names its compute (``plan.compute``); the router hands
it to the local runtime or to the runtime of that compute (made on first use, e.g. a Ray
cluster's), and remembers which one runs each deployment. Above it nothing knows which runtime
runs an instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from flowport.runtime.autoscale import ScalingStatus
from flowport.runtime.base import (
    ComputeTarget,
    DeploymentFailed,
    DeploymentKey,
    DeploymentPlan,
    InstanceState,
    LoadSource,
    ReadyListener,
    Runtime,
)

RuntimeFactory = Callable[[ComputeTarget], Runtime]
"""Makes the runtime of a non-local compute; raises ``DeploymentFailed`` when it cannot."""


class ComputeRouter:
    def __init__(self, local: Runtime, factories: dict[str, RuntimeFactory]) -> None:
        self.local = local
        self._factories = factories
        self._remote: dict[ComputeTarget, Runtime] = {}
        self._owner: dict[DeploymentKey, Runtime] = {}
        self._listener: ReadyListener | None = None
        self._load: LoadSource | None = None

    def set_listener(self, listener: ReadyListener) -> None:
        self._listener = listener
        for runtime in self._runtimes():
            runtime.set_listener(listener)

    def set_load_source(self, source: LoadSource) -> None:
        """Where autoscaled deployments read their in-flight requests (the gateway's counts)."""
        self._load = source
        for runtime in self._runtimes():
            _set_load(runtime, source)

    def _runtimes(self) -> list[Runtime]:
        return [self.local, *self._remote.values()]

    def _runtime_for(self, compute: ComputeTarget) -> Runtime:
        if compute.type == "local":
            return self.local
        runtime = self._remote.get(compute)
        if runtime is None:
            factory = self._factories.get(compute.type)
            if factory is None:
                raise DeploymentFailed(
                    f"compute {compute.name!r} is of type {compute.type}, which this server cannot run "
                    "instances on (types it runs: local, " + ", ".join(sorted(self._factories)) + ")"
                )
            runtime = factory(compute)
            if self._listener is not None:
                runtime.set_listener(self._listener)
            if self._load is not None:
                _set_load(runtime, self._load)
            self._remote[compute] = runtime
        return runtime

    async def apply(self, plan: DeploymentPlan) -> None:
        runtime = self._runtime_for(plan.compute)
        previous = self._owner.get(plan.key)
        await runtime.apply(plan)
        self._owner[plan.key] = runtime
        if previous is not None and previous is not runtime:  # moved to another compute
            await previous.remove(plan.key)

    async def remove(self, key: DeploymentKey) -> None:
        runtime = self._owner.pop(key, None)
        if runtime is not None:
            await runtime.remove(key)

    def deployments(self) -> list[DeploymentKey]:
        return [key for runtime in self._runtimes() for key in runtime.deployments()]

    def instances(self, key: DeploymentKey) -> list[InstanceState]:
        runtime = self._owner.get(key)
        return runtime.instances(key) if runtime is not None else []

    def scaling(self, key: DeploymentKey) -> ScalingStatus | None:
        runtime = self._owner.get(key)
        return runtime.scaling(key) if runtime is not None else None

    def logs(self, key: DeploymentKey, lines: int) -> list[str]:
        runtime = self._owner.get(key)
        return runtime.logs(key, lines) if runtime is not None else []

    async def close(self) -> None:
        await asyncio.gather(*(runtime.close() for runtime in self._runtimes()))


def _set_load(runtime: Runtime, source: LoadSource) -> None:
    setter = getattr(runtime, "set_load_source", None)  # runtimes that autoscale take the counts
    if setter is not None:
        setter(source)
