"""One deployment's instances: its ready set, scaling and rolling replacement."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from flowport.runtime.autoscale import ScalingStatus
from flowport.runtime.base import (
    DeploymentFailed,
    DeploymentKey,
    DeploymentPlan,
    InstanceState,
    LoadSource,
    ReadyListener,
)
from flowport.runtime.local.scaler import Load, Scaler
from flowport.runtime.local.supervisor import ManagedInstance

log = logging.getLogger("flowport.runtime.local")

WITHDRAW_GRACE = 0.2
"""Seconds between withdrawing an instance from the ready set and SIGTERM: requests the
router picked it for just before are connected (in flight) by then, and drain normally."""

InstanceFactory = Callable[[DeploymentPlan, str, Callable[[], None]], ManagedInstance]
"""``(plan, python, on_change) -> ManagedInstance``, not yet started."""
Publisher = Callable[[DeploymentKey, list[str]], None]


class Deployment:
    def __init__(
        self,
        key: DeploymentKey,
        *,
        new_instance: InstanceFactory,
        publish: Publisher,
        drain_seconds: float,
        load: Load = lambda key: {},
    ) -> None:
        self.key = key
        self.lock = asyncio.Lock()
        """Held by ``apply`` and ``remove``: one change of a deployment at a time."""
        self.members: list[ManagedInstance] = []
        """Starting and running instances (not those draining)."""
        self.plan: DeploymentPlan | None = None
        """The plan applied, its ``instance_count`` the count the autoscaler chose if it scales."""
        self.python = ""
        self.closed = False
        self.scaler = Scaler(self, load)
        self._new_instance = new_instance
        self._publish = publish
        self._drain_seconds = drain_seconds
        self._published: list[str] = []

    def states(self) -> list[InstanceState]:
        return [member.state() for member in self.members]

    def count(self) -> int:
        return len(self.members)

    def ready_addresses(self) -> list[str]:
        return [member.address for member in self.members if member.in_ready_set]

    def scaling(self) -> ScalingStatus | None:
        return self.scaler.status()

    def notify(self, force: bool = False) -> None:
        """Tell the listener the ready set, if it changed since last time."""
        addresses = self.ready_addresses()
        if force or addresses != self._published:
            self._published = addresses
            self._publish(self.key, addresses)

    async def apply(self, plan: DeploymentPlan, python: str) -> None:
        """Scale to ``plan.instance_count`` (or, autoscaled, keep the count within the plan's
        bounds); replace instances of other revisions one by one."""
        if self.closed:
            raise DeploymentFailed("the runtime is shutting down")
        if plan.scale is not None:  # a running deployment keeps its count (within the new bounds)
            start = self.count() if self.plan is not None else plan.scale.min_instances
            plan = replace(plan, instance_count=plan.scale.clamp(start))
        wanted = plan.instance_count
        # Keep the ready instances of this revision; replace the broken ones of others first.
        current = sorted((m for m in self.members if m.revision == plan.revision), key=_ready_first)
        stale = sorted((m for m in self.members if m.revision != plan.revision), key=_ready_first)
        await self._retire(current[wanted:])
        have = len(current[:wanted])
        added: list[ManagedInstance] = []
        replaced: list[ManagedInstance] = []
        drains: list[asyncio.Task[None]] = []
        try:
            while stale and have + len(added) < wanted:
                (fresh,) = await self._start([(plan, python)])
                self._admit([fresh])
                added.append(fresh)
                victim = stale.pop()
                replaced.append(victim)
                self._withdraw([victim])
                drains.append(asyncio.create_task(self._drain([victim], grace=True)))
            missing = wanted - have - len(added)
            if missing > 0:
                fresh_ones = await self._start([(plan, python)] * missing)
                self._admit(fresh_ones)
                added += fresh_ones
        except DeploymentFailed:
            await self._restore(replaced, added)
            raise
        finally:
            await asyncio.gather(*drains)
        await self._retire(stale)
        self.plan, self.python = plan, python
        self.scaler.configure(plan)

    async def scale(self, count: int, load: Mapping[str, int]) -> None:
        """Start instances (routed once ready) or retire the least busy ones; the lock is held."""
        assert self.plan is not None
        plan, have = self.plan, len(self.members)
        if count > have:
            self._admit(await self._start([(plan, self.python)] * (count - have)))
        elif count < have:
            idle_first = sorted(self.members, key=lambda m: (m.in_ready_set, load.get(m.address, 0)))
            await self._retire(idle_first[: have - count])
        self.plan = replace(plan, instance_count=count)

    async def remove(self) -> None:
        """Withdraw every instance (the listener hears ``[]``), then drain them all."""
        await self.scaler.stop()
        self.scaler.policy = None
        instances = list(self.members)
        for member in instances:
            member.serving = False
        self.members.clear()
        self.notify(force=True)
        await self._drain(instances, grace=True)
        self.plan = None

    async def close(self) -> None:
        self.closed = True
        await self.remove()

    # -- internals ----------------------------------------------------------------------

    async def _start(self, plans: Sequence[tuple[DeploymentPlan, str]]) -> list[ManagedInstance]:
        """Start instances in parallel; all ready, or all stopped and ``DeploymentFailed``."""
        if self.closed:
            raise DeploymentFailed("the runtime is shutting down")
        instances = [self._new_instance(plan, python, self.notify) for plan, python in plans]
        self.members += instances
        try:
            results = await asyncio.gather(*(i.start() for i in instances), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise next((f for f in failures if isinstance(f, DeploymentFailed)), failures[0])
        except BaseException:
            self._withdraw(instances)
            await asyncio.gather(*(i.stop(0) for i in instances), return_exceptions=True)
            raise
        return instances

    async def _restore(self, replaced: list[ManagedInstance], added: list[ManagedInstance]) -> None:
        """After a failed rolling update: start again as many instances of the old revision as
        were replaced, then stop the new ones. If the old ones cannot start, the new ones stay."""
        if replaced:
            try:
                back = await self._start([(old.plan, old.python) for old in replaced])
            except DeploymentFailed as failed:
                log.error("%s: could not restore the previous revision: %s", self.key, failed.reason)
                return
            self._admit(back)
        await self._retire(added)

    def _admit(self, instances: list[ManagedInstance]) -> None:
        for instance in instances:
            instance.serving = True
        self.notify()

    def _withdraw(self, instances: list[ManagedInstance]) -> None:
        for instance in instances:
            instance.serving = False
            if instance in self.members:
                self.members.remove(instance)
        self.notify()

    async def _drain(self, instances: list[ManagedInstance], grace: bool) -> None:
        if grace and instances:
            await asyncio.sleep(WITHDRAW_GRACE)
        await asyncio.gather(*(i.stop(self._drain_seconds) for i in instances))

    async def _retire(self, instances: list[ManagedInstance]) -> None:
        """Withdraw first (the listener stops routing to them), then drain."""
        self._withdraw(instances)
        await self._drain(instances, grace=True)


def _ready_first(instance: ManagedInstance) -> bool:
    return not instance.in_ready_set


class SupervisedRuntime:
    """What a runtime that supervises its instances itself (local processes, Ray actors) shares:
    its deployments, the ready listener, removal. A subclass makes the instances
    (``_new_instance``) and brings deployments to their plans (``apply``)."""

    def __init__(self, drain_seconds: float) -> None:
        self.drain_seconds = drain_seconds
        self._listener: ReadyListener | None = None
        self._load: LoadSource | None = None
        self._deployments: dict[DeploymentKey, Deployment] = {}
        self._masked: dict[DeploymentKey, frozenset[str]] = {}
        """Every secret of every plan applied per deployment: older lines may hold older ones."""

    def set_listener(self, listener: ReadyListener) -> None:
        self._listener = listener

    def set_load_source(self, source: LoadSource) -> None:
        """Where autoscaled deployments read their in-flight requests (the gateway's counts)."""
        self._load = source

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

    def scaling(self, key: DeploymentKey) -> ScalingStatus | None:
        deployment = self._deployments.get(key)
        return deployment.scaling() if deployment else None

    def _deployment(self, plan: DeploymentPlan) -> Deployment:
        """The plan's deployment (made on first use); remembers the plan's secrets for masking."""
        key = plan.key
        self._masked[key] = self._masked.get(key, frozenset()) | plan.masked
        deployment = self._deployments.get(key)
        if deployment is None:
            deployment = Deployment(
                key,
                new_instance=lambda plan, python, on_change: self._new_instance(key, plan, python, on_change),
                publish=self._publish,
                drain_seconds=self.drain_seconds,
                load=self._in_flight,
            )
            self._deployments[key] = deployment
        return deployment

    def _new_instance(
        self, key: DeploymentKey, plan: DeploymentPlan, python: str, on_change: Callable[[], None]
    ) -> ManagedInstance:
        raise NotImplementedError

    def _in_flight(self, key: DeploymentKey) -> dict[str, int]:
        return dict(self._load(key)) if self._load is not None else {}

    def _publish(self, key: DeploymentKey, addresses: list[str]) -> None:
        if self._listener is None:
            return
        try:
            self._listener(key, list(addresses))
        except Exception:
            log.exception("the ready listener failed for %s", key)
