"""When a chain of sync tools may run on the event loop instead of in a worker thread.

A thread hop costs tens of microseconds; for a flow of small pure-Python tools that is
most of the line's cost. Blocking the loop is worse, though: a tool that waits on I/O
must never run there, nor one that starts its own event loop (``asyncio.run``). So a flow
earns the inline mode by proof — many consecutive runs, all fast — and loses it for good the
first time an inline run is slow or fails.
"""

from __future__ import annotations

import os

INLINE_ENV = "FLOWPORT_INLINE_FAST_TOOLS"


class InlinePolicy:
    """Tracks a flow's chain run times and says whether the next run may go inline."""

    def __init__(
        self,
        enabled: bool | None = None,
        *,
        fast_seconds: float = 0.0002,
        proof_runs: int = 200,
        demote_seconds: float = 0.002,
    ) -> None:
        if enabled is None:
            enabled = os.environ.get(INLINE_ENV, "1").lower() not in ("0", "false", "no")
        self.enabled = enabled
        self.fast_seconds = fast_seconds
        self.proof_runs = proof_runs
        self.demote_seconds = demote_seconds
        self.inline = False
        self.demoted = not enabled
        self._fast_runs = 0

    def record(self, seconds: float) -> None:
        """Account one run of the chain (called from worker threads too: races only delay)."""
        if self.demoted:
            return
        if self.inline:
            if seconds > self.demote_seconds:
                self.inline = False
                self.demoted = True
        elif seconds <= self.fast_seconds:
            self._fast_runs += 1
            if self._fast_runs >= self.proof_runs:
                self.inline = True
        else:
            self._fast_runs = 0

    def failed(self) -> None:
        """An inline run raised: it may be a tool that cannot run on the loop; stop inlining."""
        if self.inline:
            self.inline = False
            self.demoted = True
