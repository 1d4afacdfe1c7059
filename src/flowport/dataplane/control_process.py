"""The control plane as a child process of the data plane, restarted whenever it dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time

from flowport.runtime.local.process import preexec

log = logging.getLogger("flowport.dataplane")

BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
STABLE_SECONDS = 30.0
"""A control plane that ran this long is restarted at once when it dies."""
STOP_SECONDS = 15.0


class ControlProcess:
    """``python -m flowport.control.process ...``: started, watched, restarted, stopped.

    Its output goes to the server's own stdout and stderr. It dies with the data plane
    (even on SIGKILL), so there is never a control plane without a data plane.
    """

    def __init__(self, arguments: list[str], environment: dict[str, str]) -> None:
        self.command = [sys.executable, "-m", "flowport.control.process", *arguments]
        self.environment = environment
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep_running())

    async def _keep_running(self) -> None:
        backoff = 0.0
        while not self._stopping:
            started = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                env=self.environment,
                preexec_fn=preexec(),
            )
            self.starts += 1
            code = await self.process.wait()
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_SECONDS:
                backoff = 0.0
            log.warning(
                "the control plane exited (code %s); restarting it%s; scoring goes on",
                code,
                f" in {backoff:.1f} s" if backoff else "",
            )
            print(f"flowport: the control plane exited (code {code}); restarting it", file=sys.stderr)
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, max(BACKOFF_START, backoff * 2))

    async def stop(self) -> None:
        """SIGTERM (it finishes its requests), SIGKILL after ``STOP_SECONDS``."""
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
