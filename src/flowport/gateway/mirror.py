"""Mirrored traffic: a copy of a request sent to another deployment in the background.

The copy's answer is read and, unless a comparison waits for it (``on_done``), thrown away;
it never delays or fails the caller. At most ``limit`` copies are in flight: more are dropped
(and counted), so a slow mirror cannot pile up memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from flowport.gateway.compare import Side
from flowport.gateway.headers import Headers
from flowport.gateway.metrics import GatewayMetrics
from flowport.gateway.proxy import CAPTURE_LIMIT, PASSED_THROUGH
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

    def copy(
        self,
        state: DeploymentState,
        path: str,
        headers: Headers,
        body: bytes,
        on_done: Callable[[Side], None] | None = None,
    ) -> bool:
        """Send a copy to ``state``'s least busy instance, unless too many copies are in flight.

        ``on_done`` gets the copy's answer (status as the gateway would have sent it, body up
        to ``CAPTURE_LIMIT``) when it ends. False when the copy was dropped.
        """
        if len(self._tasks) >= self.limit:
            self._count(state, "dropped")
            return False
        task = asyncio.get_running_loop().create_task(self._send(state, path, headers, body, on_done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _count(self, state: DeploymentState, outcome: str) -> None:
        if state.live:
            self.metrics.child(self.metrics.mirrored, state.endpoint, state.name, outcome).inc()

    async def _send(
        self,
        state: DeploymentState,
        path: str,
        headers: Headers,
        body: bytes,
        on_done: Callable[[Side], None] | None,
    ) -> None:
        started = time.perf_counter()
        upstream = state.pool.choose()
        if upstream is None:
            self._count(state, "error")
            if on_done is not None:
                on_done(Side(state.name, 503, 0.0, b""))
            return
        state.pool.acquire(upstream)
        outcome = "error"
        status, kept, events, truncated = 502, bytearray(), False, False
        try:
            timeout = state.settings.request_timeout_ms / 1000 + self.grace_seconds
            answer = await upstream.transport.request("POST", path.encode(), headers, body, timeout, 5.0)
            events = (answer.header(b"content-type") or b"").startswith(b"text/event-stream")
            try:
                async for chunk in answer.aiter_raw():
                    if on_done is not None and not truncated:
                        truncated = len(kept) + len(chunk) > CAPTURE_LIMIT
                        if not truncated:
                            kept += chunk
            finally:
                await answer.aclose()
            status = answer.status_code
            if status < 400:
                outcome = "ok"
            elif status not in PASSED_THROUGH:
                status = 424  # what the caller would have been answered
        except TransportError:
            pass
        finally:
            state.pool.release(upstream)
            self._count(state, outcome)
            state.stats.record_mirror()
            if on_done is not None:
                elapsed = (time.perf_counter() - started) * 1000
                on_done(Side(state.name, status, elapsed, bytes(kept), events, truncated))

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
