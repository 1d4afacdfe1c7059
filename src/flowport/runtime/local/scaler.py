"""Driving the autoscaling policy for one local deployment: sample, decide, scale, record.

Runs in the data plane beside the instances, so it keeps scaling while the control plane is
down; the control plane collects the recorded events when it asks (``Runtime.scaling``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from flowport.runtime.autoscale import EVENTS_KEPT, Autoscaler, ScalingEvent, ScalingStatus
from flowport.runtime.base import DeploymentFailed, DeploymentKey, DeploymentPlan

log = logging.getLogger("flowport.runtime.local")

Load = Callable[[DeploymentKey], Mapping[str, int]]


class Scalable(Protocol):
    """What the scaler needs of a deployment (``local.deployment.Deployment``)."""

    key: DeploymentKey
    lock: asyncio.Lock
    plan: DeploymentPlan | None

    def count(self) -> int: ...

    def ready_addresses(self) -> list[str]: ...

    def scale(self, count: int, load: Mapping[str, int]) -> Awaitable[None]: ...


class Scaler:
    """Polls the load of a deployment whose plan has ``scale`` and scales it within the bounds."""

    def __init__(self, deployment: Scalable, load: Load) -> None:
        self.deployment = deployment
        self._load = load
        self.policy: Autoscaler | None = None
        self.events: deque[ScalingEvent] = deque(maxlen=EVENTS_KEPT)
        self._task: asyncio.Task[None] | None = None

    def configure(self, plan: DeploymentPlan) -> None:
        """After every ``apply`` (lock held): follow the plan's settings; the cool-down restarts."""
        if plan.scale is None:
            self.policy = None
            self._cancel()
            return
        capacity = plan.config.max_concurrent_requests
        if self.policy is None or (self.policy.settings, self.policy.capacity) != (plan.scale, capacity):
            self.policy = Autoscaler(plan.scale, capacity)
        self.policy.changed(asyncio.get_running_loop().time())
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"autoscale {self.deployment.key}")

    def status(self) -> ScalingStatus | None:
        if self.policy is None:
            return None
        return ScalingStatus(self.policy.settings, self.deployment.count(), tuple(self.events))

    async def stop(self) -> None:
        task = self._cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _cancel(self) -> asyncio.Task[None] | None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        return task

    async def _run(self) -> None:
        while self.policy is not None:
            await asyncio.sleep(self.policy.interval)
            try:
                await self.tick()
            except Exception:  # the loop must outlive one bad poll
                log.exception("autoscaling %s failed", self.deployment.key)

    async def tick(self) -> None:
        """One poll: sample the in-flight requests; scale when the policy says so."""
        deployment, policy = self.deployment, self.policy
        if policy is None or deployment.plan is None or deployment.lock.locked():
            return  # a roll-out is under way: it sets the count
        load = self._load(deployment.key)
        in_flight = sum(load.get(address, 0) for address in deployment.ready_addresses())
        loop = asyncio.get_running_loop()
        current = deployment.count()
        decision = policy.poll(loop.time(), current, in_flight)
        if decision is None or decision.count == current:
            return
        async with deployment.lock:
            if deployment.plan is None or self.policy is not policy:
                return  # removed or re-applied meanwhile
            error = ""
            try:
                await deployment.scale(decision.count, self._load(deployment.key))
            except DeploymentFailed as failed:
                error = failed.reason
            policy.changed(loop.time())
        self._record(current, decision.count, decision.reason, error)

    def _record(self, before: int, after: int, reason: str, error: str) -> None:
        event = ScalingEvent(
            id=secrets.token_hex(8),
            time=datetime.now(UTC).isoformat(),
            from_count=before,
            to_count=after,
            reason=reason,
            succeeded=not error,
            error=error,
        )
        self.events.append(event)
        outcome = f"failed: {error}" if error else "done"
        log.info(
            "%s: scaling from %d to %d instance(s) (%s): %s",
            self.deployment.key,
            before,
            after,
            reason,
            outcome,
        )
