"""Mirrored traffic: a copy of a request sent to another deployment in the background.

The copy's answer is read and thrown away; it never delays or fails the caller. At most
``limit`` copies are in flight: more are dropped (and counted), so a slow mirror cannot
pile up memory.
"""

from __future__ import annotations

import asyncio
import contextlib

from flowport.gateway.headers import Headers
from flowport.gateway.metrics import GatewayMetrics
from flowport.gateway.table import DeploymentState
from flowport.transport import TransportError

DEFAULT_LIMIT = 64


class Mirror:
    def __init__(
        self, metrics: GatewayMetrics, limit: int = DEFAULT_LIMIT, grace_seconds: float = 5.0
    ) -> None:
        self.metrics = metrics
        self.limit = limit
        self.grace_seconds = grace_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    def copy(self, state: DeploymentState, path: str, headers: Headers, body: bytes) -> None:
        """Send a copy to ``state``'s least busy instance, unless too many copies are in flight."""
        if len(self._tasks) >= self.limit:
            self._count(state, "dropped")
            return
        task = asyncio.get_running_loop().create_task(self._send(state, path, headers, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count(self, state: DeploymentState, outcome: str) -> None:
        if state.live:
            self.metrics.child(self.metrics.mirrored, state.endpoint, state.name, outcome).inc()

    async def _send(self, state: DeploymentState, path: str, headers: Headers, body: bytes) -> None:
        upstream = state.pool.choose()
        if upstream is None:
            self._count(state, "error")
            return
        state.pool.acquire(upstream)
        outcome = "error"
        try:
            timeout = state.settings.request_timeout_ms / 1000 + self.grace_seconds
            answer = await upstream.transport.request("POST", path.encode(), headers, body, timeout, 5.0)
            try:
                async for _ in answer.aiter_raw():
                    pass
            finally:
                await answer.aclose()
            if answer.status_code < 400:
                outcome = "ok"
        except TransportError:
            pass
        finally:
            state.pool.release(upstream)
            self._count(state, outcome)
            state.stats.record_mirror()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
