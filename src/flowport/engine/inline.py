"""When a chain of sync tools may run on the event loop instead of in a worker thread.

A thread hop costs tens of microseconds; for a flow of small pure-Python tools that is
most of the line's cost. Blocking the loop is worse, though: a tool that waits on I/O
must never run there, nor one that starts its own event loop (``asyncio.run``). So a flow
earns the inline mode by proof — many consecutive runs, all fast — and loses it for good the
first time an inline run is slow or fails.

Wall time alone misjudges a busy machine: a 50 µs run that the OS preempts for a few
milliseconds looks slow although it neither waited nor worked. So a slow run is looked at
twice more: the thread's CPU time (``time.thread_time``) tells a heavy tool, and on Linux its
voluntary context switches (``getrusage(RUSAGE_THREAD)``) tell a run that waited (I/O, sleep,
a lock). A slow run that did neither only lost the core: it neither breaks the proof nor ends
the inline mode. Nor does a slow run while the trace export thread was working
(``tracing.export.exporting_since``): it waited for the GIL, not for I/O; nor one that a full
garbage collection interrupted (any allocation may start one; tracing's queued spans make them
more frequent): that time says nothing about the tools.
"""

from __future__ import annotations

import gc
import os
import time
from typing import NamedTuple

from flowport.tracing.export import ACTIVITY, exporting_since

try:
    from resource import RUSAGE_THREAD, getrusage
except ImportError:  # not Linux: every slow run counts as one that waited
    RUSAGE_THREAD = None

INLINE_ENV = "FLOWPORT_INLINE_FAST_TOOLS"


class Mark(NamedTuple):
    """Where a run started: wall clock, the thread's CPU clock and its voluntary switches."""

    started: float
    cpu: float
    voluntary: int
    exports: int = 0
    collections: int = 0


class _Collections:
    """Older-generation garbage collections so far (counted by a ``gc`` callback)."""

    count = 0


COLLECTIONS = _Collections()


def _count_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2:
        COLLECTIONS.count += 1


gc.callbacks.append(_count_collection)


def _voluntary_switches() -> int:
    return getrusage(RUSAGE_THREAD).ru_nvcsw if RUSAGE_THREAD is not None else 0


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

    def start(self) -> Mark:
        """Call in the thread about to run the chain; pass the mark to ``finish``."""
        if self.demoted:  # nothing more to decide: spare the two system calls
            return Mark(time.perf_counter(), 0.0, 0)
        return Mark(
            time.perf_counter(), time.thread_time(), _voluntary_switches(), ACTIVITY.count, COLLECTIONS.count
        )

    def finish(self, mark: Mark, inline: bool) -> None:
        """Account the run that started at ``mark`` (same thread); ``inline``: it ran on the loop."""
        seconds = time.perf_counter() - mark.started
        if seconds <= self.fast_seconds or self.demoted:
            self.record(seconds, inline=inline)
            return
        cpu = time.thread_time() - mark.cpu
        waited = RUSAGE_THREAD is None or _voluntary_switches() > mark.voluntary
        if COLLECTIONS.count != mark.collections:
            self.record(seconds, inline=inline, cpu=0.0, waited=False)  # a full collection ran
            return
        if waited and exporting_since(mark.exports):
            waited = False  # the trace export thread had the GIL
        self.record(seconds, inline=inline, cpu=cpu, waited=waited)

    def record(self, seconds: float, *, inline: bool, cpu: float | None = None, waited: bool = True) -> None:
        """Account one run. Worker threads call this too: a race may promote a run or two
        early or late, which is harmless; only inline runs can demote.

        ``cpu``: the thread's CPU seconds in the run (unknown: as slow as the wall time);
        ``waited``: the thread blocked during the run (in a worker thread that includes waiting
        for the GIL, so there a slow run is rarely excused).
        """
        if self.demoted:
            return
        cpu = seconds if cpu is None else cpu
        if inline:
            if seconds > self.demote_seconds and (waited or cpu > self.demote_seconds):
                self.inline = False
                self.demoted = True
        elif self.inline:
            return  # a pool run that began before the promotion proves nothing more
        elif seconds <= self.fast_seconds:
            self._fast_runs += 1
            if self._fast_runs >= self.proof_runs:
                self.inline = True
        elif waited or cpu > self.fast_seconds:
            self._fast_runs = 0

    def failed(self) -> None:
        """An inline run raised: it may be a tool that cannot run on the loop; stop inlining."""
        if self.inline:
            self.inline = False
            self.demoted = True
