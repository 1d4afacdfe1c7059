"""One instance on Ray, supervised from the data plane like a local one.

``RayInstance`` is a ``ManagedInstance`` whose "process" is an instance actor: the same
readiness gate, liveness and readiness probes (over HTTP to the node), restarts with backoff
(on a node picked again, so instances come back when a node is lost) and draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from flowport.instance_keys import HEADER
from flowport.runtime.base import DeploymentFailed, DeploymentPlan, InstanceState
from flowport.runtime.local.logs import TRACE_SUFFIX, masking
from flowport.runtime.local.probes import InstanceClient
from flowport.runtime.local.supervisor import ManagedInstance
from flowport.runtime.ray.actor import InstanceActor
from flowport.runtime.ray.sealing import seal
from flowport.tracing.export import FILE_LIMIT

ACTOR_START_SECONDS = 900.0
"""How long an actor may take to be created (Ray may build a virtualenv for it first)."""
log = logging.getLogger("flowport.runtime.ray")

STOP_GRACE = 10.0
"""Seconds the actor gets beyond the drain time to answer ``stop`` before it is killed."""
SPAN_PULL_SECONDS = 1.0
"""How often an instance's new spans are brought from its node to the built-in store's file."""
SPAN_PULL_BYTES = 4 * 1024 * 1024

Placer = Callable[["RayInstance"], Awaitable[str]]
"""Picks the node for an instance (the least used by its deployment)."""


def _reason(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class ActorProcess:
    """An instance actor seen as a process: ``wait()`` returns its exit code, -9 if the actor died."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.pid: int | None = None
        self.returncode: int | None = None
        self.tail: list[str] = []
        self._watch: asyncio.Future[int] | None = None
        self._spans_offset = 0
        self._spans_path: Path | None = None
        self._puller: asyncio.Task[None] | None = None

    def pull_spans_into(self, path: Path) -> None:
        """Bring the instance's spans from its node into ``path`` (the built-in store's file for
        this instance, as a local instance writes it) every ``SPAN_PULL_SECONDS`` until ``stop``."""
        self._spans_path = path
        self._puller = asyncio.create_task(self._pull_every(path))

    async def _pull_every(self, path: Path) -> None:
        while self.returncode is None:  # a gone actor has nothing more to give
            await asyncio.sleep(SPAN_PULL_SECONDS)
            await self._pull(path)

    async def _pull(self, path: Path) -> None:
        """One pull; a failure loses those spans (logged), never the instance's supervision."""
        try:
            data, self._spans_offset = await self.actor.spans.remote(self._spans_offset, SPAN_PULL_BYTES)
            if data:
                await asyncio.to_thread(_append, path, data)
        except ray.exceptions.RayError:
            return
        except Exception as exc:  # a full disk, a reply of the wrong shape
            log.warning("spans of a Ray instance could not be kept in %s: %s", path, exc)

    async def wait(self) -> int:
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._watched())
        return await asyncio.shield(self._watch)

    async def _watched(self) -> int:
        try:
            code, tail = await self.actor.watch.remote()
        except ray.exceptions.RayError as exc:
            code, tail = -9, [f"the instance's Ray actor is gone: {_reason(exc)}"]
        self.returncode, self.tail = code, tail
        return code

    async def stop(self, drain_seconds: float) -> None:
        """Ask the actor to drain and stop its server, then end the actor (its last spans pulled first)."""
        if self._puller is not None:
            self._puller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._puller
            self._puller = None
        if self._spans_path is not None and self.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pull(self._spans_path), STOP_GRACE)
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            await asyncio.wait_for(self.actor.stop.remote(drain_seconds), drain_seconds + STOP_GRACE)
        with contextlib.suppress(ray.exceptions.RayError):
            ray.kill(self.actor, no_restart=True)
        if self.returncode is None:
            self.returncode = -15


def _append(path: Path, data: bytes) -> None:
    """Append span lines to a built-in store file, which starts over past ``FILE_LIMIT`` as an
    instance's own does."""
    with open(path, "ab") as file:
        if file.tell() + len(data) > FILE_LIMIT:
            file.truncate(0)
        file.write(data)


class RayInstance(ManagedInstance):
    def __init__(
        self,
        *,
        id: str,
        plan: DeploymentPlan,
        log_path: Path,
        on_change: Callable[[], None],
        flow: ray.ObjectRef,
        runtime_env: dict[str, Any] | None,
        place: Placer,
        access_key: str,
    ) -> None:
        super().__init__(
            id=id,
            plan=plan,
            python="",
            log_path=log_path,
            isolation=None,
            on_change=on_change,  # type: ignore[arg-type]
        )
        self.node = ""
        self.url = ""
        self._flow = flow
        self._runtime_env = runtime_env
        self._place = place
        self._access_key = access_key
        """What every request to the instance must carry: it listens on the node's network address."""
        self.actor_process: ActorProcess | None = None

    @property
    def address(self) -> str:
        return self.url

    def state(self) -> InstanceState:
        process = self.actor_process
        alive = process is not None and process.returncode is None
        return InstanceState(
            id=self.id,
            address=self.url,
            revision=self.revision,
            ready=self.in_ready_set,
            pid=process.pid if alive and process is not None else None,
            restarts=self.restarts,
            node=self.node,
        )

    def log_tail(self) -> list[str]:
        tail = self.actor_process.tail if self.actor_process is not None else []
        return list(map(masking(self.plan.masked), tail))

    def live_tail(self, lines: int) -> list[str]:
        """The instance server's last lines, read on its node (blocking: call it in a thread)."""
        process = self.actor_process
        if process is None or process.returncode is not None:
            return self.log_tail()[-lines:]
        try:
            tail = ray.get(process.actor.tail.remote(lines), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            return self.log_tail()[-lines:]
        return list(map(masking(self.plan.masked), tail))

    # -- the process hooks of ManagedInstance -----------------------------------------------

    async def _spawn_ready(self) -> None:
        """A new actor on the least used node, its server started with the sealed config, gated."""
        self.node = await self._place(self)
        actor = InstanceActor.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(self.node, soft=False),
            runtime_env=self._runtime_env,
        ).remote()
        self.process = self.actor_process = process = ActorProcess(actor)  # type: ignore[assignment]
        try:  # the actor's creation includes building its pip environment on the node
            public_key = await asyncio.wait_for(actor.public_key.remote(), ACTOR_START_SECONDS)
            config = json.dumps({**self.plan.config.to_json(), "access_key": self._access_key}).encode()
            started = await actor.start.remote(self._flow, seal(public_key, config))
        except (ray.exceptions.RayError, TimeoutError) as exc:
            reason = _reason(exc) if str(exc) else f"no actor running after {ACTOR_START_SECONDS:g} s"
            process.tail = [reason]
            await self._discard()
            raise DeploymentFailed(f"instance {self.id} could not start on Ray: {reason}") from None
        self.node, self.url, process.pid = started["node"], started["address"], started["pid"]
        process.pull_spans_into(self.log_path.with_suffix(TRACE_SUFFIX))
        self.client = InstanceClient(url=self.url, headers={HEADER.decode(): self._access_key})
        await self._gate()

    async def _discard(self) -> None:
        if self.actor_process is not None:
            await self.actor_process.stop(0)
        await self._release()

    async def _terminate(self, drain_seconds: float) -> None:
        if self.actor_process is not None:
            await self.actor_process.stop(drain_seconds)
