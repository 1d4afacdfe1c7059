"""The control plane as a child process of the data plane, restarted whenever it dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable

from flowport.runtime.local.process import preexec

log = logging.getLogger("flowport.dataplane")

BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
STABLE_SECONDS = 30.0
"""A control plane that ran this long is restarted at once when it dies."""
QUICK_FAILURES = 5
"""This many exits in a row, each within ``STABLE_SECONDS`` of its start: it cannot start; give up."""
STOP_SECONDS = 15.0


class ControlProcess:
    """``python -m flowport.control.process ...``: started, watched, restarted, stopped.

    Its output goes to the server's own stdout and stderr. It has a session of its own (a
    Ctrl-C at the terminal reaches only the data plane, which then stops it) and dies with
    the data plane (even on SIGKILL), so there is never a control plane without a data plane.
    When it keeps dying at start (a bad database URL, a failed migration), ``on_give_up`` is
    called and ``gave_up`` is set.
    """

    def __init__(
        self, arguments: list[str], environment: dict[str, str], on_give_up: Callable[[], None]
    ) -> None:
        self.command = [sys.executable, "-m", "flowport.control.process", *arguments]
        self.environment = environment
        self.on_give_up = on_give_up
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.gave_up = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep_running())

    async def _keep_running(self) -> None:
        backoff, quick = 0.0, 0
        while not self._stopping:
            started = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                env=self.environment,
                start_new_session=True,
                preexec_fn=preexec(),
            )
            self.starts += 1
            code = await self.process.wait()
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_SECONDS:
                backoff, quick = 0.0, 0
            quick += 1
            if quick >= QUICK_FAILURES:
                self.gave_up = True
                print(
                    f"flowport: the control plane exited {quick} times in a row right after starting "
                    f"(last code {code}); its error is above. Stopping the server.",
                    file=sys.stderr,
                )
                self.on_give_up()
                return
            log.warning("the control plane exited (code %s); restarting it; scoring goes on", code)
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
