"""One supervised instance: spawn, gate on readiness, probe, restart with backoff, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from flowport.runtime.base import DeploymentFailed, DeploymentPlan, InstanceState, Probe
from flowport.runtime.local import process as processes
from flowport.runtime.local.isolation import Isolation, Workspace
from flowport.runtime.local.logs import TRACE_SUFFIX, masking, note, tail_lines
from flowport.runtime.local.probes import InstanceClient
from flowport.serving.user_script import FAILED_TO_START

log = logging.getLogger("flowport.runtime.local")

GATE_POLL = 0.05
"""Seconds between ``/ready`` polls while an instance starts."""
MIN_STARTUP = 60.0
MIN_PERIOD = 0.05
BACKOFF_START = 0.5
"""The wait before the second restart in a row; the first one is immediate."""
BACKOFF_MAX = 30.0
BACKOFF_RESET = 60.0
"""An instance that stayed up this long restarts at once again."""
TAIL_LINES = 30


def startup_deadline(readiness: Probe) -> float:
    return max(MIN_STARTUP, readiness.initial_delay + readiness.period * readiness.failure_threshold)


class ManagedInstance:
    """An instance process and the task that keeps it alive.

    ``ready`` follows the probes; ``serving`` is the deployment's decision to route to it.
    Only instances that are both are in the deployment's ready set; ``on_change`` is called
    whenever ``ready`` flips so the deployment can tell its listener.
    """

    def __init__(
        self,
        *,
        id: str,
        plan: DeploymentPlan,
        python: str,
        log_path: Path,
        isolation: Isolation,
        on_change: Callable[[], None],
    ) -> None:
        self.id = id
        self.plan = plan
        self.python = python
        self.log_path = log_path
        self._isolation = isolation
        self._workspace: Workspace | None = None
        self._on_change = on_change
        self.socket = ""
        self.process: asyncio.subprocess.Process | None = None
        self.client: InstanceClient | None = None
        self.ready = False
        self.serving = False
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    @property
    def revision(self) -> str:
        return self.plan.revision

    @property
    def in_ready_set(self) -> bool:
        return self.serving and self.ready

    def state(self) -> InstanceState:
        process = self.process
        return InstanceState(
            id=self.id,
            address=self.address,
            revision=self.revision,
            ready=self.in_ready_set,
            pid=process.pid if process is not None and process.returncode is None else None,
            restarts=self.restarts,
        )

    def log_tail(self) -> list[str]:
        """The log's last lines, secrets masked (they end up in API answers)."""
        return list(map(masking(self.plan.masked), tail_lines(self.log_path, TAIL_LINES)))

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn and wait for the first 200 from ``/ready``; ``DeploymentFailed`` if it never comes."""
        try:
            await self._spawn_ready()
            if self._stopping:
                raise DeploymentFailed(f"instance {self.id} was stopped while it started")
        except BaseException:
            await self._discard()
            raise
        self._set_ready(True)
        self._task = asyncio.create_task(self._supervise(), name=f"supervise {self.id}")
        self._task.add_done_callback(self._supervisor_ended)

    async def stop(self, drain_seconds: float) -> None:
        """Stop supervising, then SIGTERM and wait up to ``drain_seconds`` before SIGKILL."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._terminate(drain_seconds)
        self.ready = False
        await self._release()

    async def _terminate(self, drain_seconds: float) -> None:
        """SIGTERM the process, SIGKILL it after ``drain_seconds`` (a subclass ends its own kind)."""
        if self.process is not None:
            await processes.stop(self.process, drain_seconds)

    # -- internals ----------------------------------------------------------------------

    def _supervisor_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("supervising instance %s failed", self.id, exc_info=task.exception())

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self._on_change()

    def _trace_environment(self) -> dict[str, str]:
        """Who the instance is, for its spans (the built-in store's files are per instance)."""
        key = self.plan.key
        return {
            "FLOWPORT_ENDPOINT": key.endpoint,
            "FLOWPORT_DEPLOYMENT": key.deployment,
            "FLOWPORT_INSTANCE_ID": self.id,
        }

    async def _spawn_ready(self) -> None:
        """Start a fresh process in a fresh workspace (its socket) and wait until it answers ``/ready``."""
        self._workspace = workspace = self._isolation.new_workspace()
        self.socket = workspace.socket
        try:
            self.process = await processes.spawn(
                self.python,
                self.socket,
                self.plan.config,
                self.log_path,
                env={**self._isolation.environment(workspace, self.python), **self._trace_environment()},
                cwd=str(workspace.root),
                become=self._isolation.become(),
                trace_path=self.log_path.with_suffix(TRACE_SUFFIX),
            )
        except OSError as exc:
            raise DeploymentFailed(f"instance {self.id} could not start: {exc}") from None
        self.client = InstanceClient(self.socket)
        await self._gate()

    async def _gate(self) -> None:
        assert self.process is not None and self.client is not None
        loop = asyncio.get_running_loop()
        readiness = self.plan.readiness
        limit = startup_deadline(readiness)
        deadline = loop.time() + limit
        exited = asyncio.ensure_future(self.process.wait())
        try:
            while not exited.done():
                if await self.client.ok("/ready", max(readiness.timeout, GATE_POLL)):
                    return
                if loop.time() >= deadline:
                    await self._discard()
                    raise DeploymentFailed(
                        f"instance {self.id} was not ready within {limit:g} s", self.log_tail()
                    )
                await asyncio.wait([exited], timeout=GATE_POLL)
        finally:
            exited.cancel()
        code = self.process.returncode
        await self._release()
        tail = self.log_tail()
        told = next((line for line in reversed(tail) if line.startswith(FAILED_TO_START)), None)
        if told is not None:  # the scoring script's own words: where and why, in one line
            raise DeploymentFailed(told, [line for line in tail if line != told])
        raise DeploymentFailed(f"instance {self.id} exited with code {code} before it was ready", tail)

    async def _supervise(self) -> None:
        """Watch the running process; restart it when it exits or fails its liveness probe."""
        loop = asyncio.get_running_loop()
        backoff = 0.0
        while True:
            ready_since = loop.time()
            cause = await self._watch()
            self._set_ready(False)
            log.warning("instance %s %s", self.id, cause)
            await self._discard()
            if loop.time() - ready_since >= BACKOFF_RESET:
                backoff = 0.0
            while True:
                note(self.log_path, f"{cause}; restarting in {backoff:g} s")
                await asyncio.sleep(backoff)
                backoff = min(max(backoff * 2, BACKOFF_START), BACKOFF_MAX)
                self.restarts += 1
                try:
                    await self._spawn_ready()
                    break
                except DeploymentFailed as failed:
                    await self._discard()
                    cause = failed.reason
            assert self.process is not None
            note(self.log_path, f"restarted as pid {self.process.pid}, ready")
            self._set_ready(True)

    async def _watch(self) -> str:
        """Wait for the first sign of trouble; returns what happened."""
        watchers = [
            asyncio.create_task(self._exit()),
            asyncio.create_task(self._liveness()),
            asyncio.create_task(self._readiness()),
        ]
        try:
            done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        return done.pop().result()

    async def _exit(self) -> str:
        assert self.process is not None
        code = await self.process.wait()
        return f"exited with code {code}"

    async def _liveness(self) -> str:
        """Returns once ``/health`` failed ``failure_threshold`` times in a row."""
        assert self.client is not None
        probe = self.plan.liveness
        await asyncio.sleep(probe.initial_delay)
        failures = 0
        while True:
            if await self.client.ok("/health", probe.timeout):
                failures = 0
            else:
                failures += 1
                if failures >= probe.failure_threshold:
                    return f"failed {failures} liveness probes in a row; killed"
            await asyncio.sleep(max(probe.period, MIN_PERIOD))

    async def _readiness(self) -> str:
        """Withdraws the instance after ``failure_threshold`` failed ``/ready`` probes, re-adds it
        after ``success_threshold`` good ones; never returns."""
        assert self.client is not None
        probe = self.plan.readiness
        failures = successes = 0
        while True:
            await asyncio.sleep(max(probe.period, MIN_PERIOD))
            if await self.client.ok("/ready", probe.timeout):
                failures, successes = 0, successes + 1
                if successes >= probe.success_threshold:
                    self._set_ready(True)
            else:
                failures, successes = failures + 1, 0
                if failures >= probe.failure_threshold:
                    self._set_ready(False)

    async def _discard(self) -> None:
        """SIGKILL the current process (if any is running) and release its socket."""
        if self.process is not None and self.process.returncode is None:
            processes.kill(self.process)
            await self.process.wait()
        await self._release()

    async def _release(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self._workspace is not None:
            self._isolation.release(self._workspace)
            self._workspace = None
