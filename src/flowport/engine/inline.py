"""When a chain of sync tools may run on the event loop instead of in a worker thread.

A thread hop costs tens of microseconds; for a flow of small pure-Python tools that is
most of the line's cost. Blocking the loop is worse, though: a tool that waits on I/O
must never run there, nor one that starts its own event loop (``asyncio.run``). So a flow
earns the inline mode by proof — many consecutive runs, all fast — and loses it for good the
first time an inline run is slow or fails.

Wall time alone misjudges a busy machine: a 50 µs run that the OS preempts for a few
milliseconds looks slow although it neither waited nor worked. So a slow run is looked at
again through the thread's context switches (``getrusage(RUSAGE_THREAD)``, read before a run,
again only when it turns out slow): a voluntary one means the run waited (I/O, sleep, a
lock); an involuntary one means the OS took the core away; a slow run with neither computed
all along (a heavy tool). A run that was only preempted neither breaks the proof nor ends the inline
mode. Time the garbage collector took during a run is not the run's either: a full collection
stops the whole process wherever the tool runs (one of 9 ms, in a process holding many lines,
used to end the inline mode of a 7 µs flex entry). A run that blocked ends the inline mode at
once; one that only computed too long ends it when another did within the last ``heavy_window``
inline runs: on a shared virtual machine a 7 µs run now and then takes milliseconds that the
guest cannot explain (its CPU clock charged them to the run), and a tool that is heavy every
time is caught at its second run (in a worker thread it would hold the GIL, and so the loop, much the
same). Nor does a run that blocked while the trace export thread was working
(``tracing.export.exporting_since``): it waited for the GIL, not for I/O.

Few system calls: the thread's CPU clock (``time.thread_time``), which used to tell a heavy run,
is a system call of its own; the involuntary switches tell a preempted run without it (a run
both preempted and heavy is given the benefit of the doubt: a heavy tool is caught on its runs
that were not preempted). And an inline run does not read the counters when it starts
(``start_inline``, ``call_inline``): they are read by the first inline run of an event loop
iteration, again at the end of every slow run, and at least every ``BASE_SECONDS``; a run
measures from the latest reading. Between two readings the loop thread never waits in its
selector (a reading is forgotten when the loop next turns), so what the counts gained since is
the run's own doing plus that of the loop's callbacks before it in the same iteration: a run
that waited still shows its voluntary switch and ends the inline mode at once (a blocking entry
is still caught the first time it blocks); a voluntary switch of another callback earlier in the
iteration (rare: blocking I/O on the loop, or waiting for the GIL) may make a slow run look as
if it waited too, and the trace exporter's activity excuses over the same span. Reading the
counters before every run (a system call, and the mark) cost about 0.6 µs a run, a seventh of
what the engine added to a small flex entry's line; so did ``asyncio``'s running-loop check
(it calls ``getpid``), so a reading is matched to its thread instead.
"""

from __future__ import annotations

import gc
import os
from asyncio import AbstractEventLoop
from asyncio.events import _get_running_loop
from collections.abc import Callable
from threading import get_ident
from time import perf_counter
from typing import Any

from flowport.tools.usage import UsageOwner, usage_owner
from flowport.tracing.export import ACTIVITY, exporting_since

try:
    from resource import RUSAGE_THREAD, getrusage
except ImportError:  # not Linux: every slow run counts as one that waited
    RUSAGE_THREAD = None

INLINE_ENV = "FLOWPORT_INLINE_FAST_TOOLS"


Mark = tuple[float, int, int, float, int]
"""Where a run started: wall clock, the thread's voluntary and involuntary context switches,
the garbage collector's seconds so far and the trace exporter's activity count (a plain tuple:
it is made for every run)."""


Base = tuple[int, float, int, int, int, AbstractEventLoop]
"""The counters inline runs measure from: the thread, when read (``perf_counter``), its voluntary
and involuntary context switches, the trace exporter's activity count, and the event loop."""

BASE_SECONDS = 0.05
"""How long a reading may serve at most: a safety net for a loop that closed before it turned
(which forgets the reading); the thread is compared, not the running loop (``asyncio``'s check
for that calls ``getpid``, a system call)."""


def _switches() -> tuple[int, int]:
    """The calling thread's voluntary and involuntary context switches so far."""
    if RUSAGE_THREAD is None:
        return (0, 0)
    usage = getrusage(RUSAGE_THREAD)
    return (usage.ru_nvcsw, usage.ru_nivcsw)


class _CollectorClock:
    """Seconds the garbage collector has spent, summed over every collection of the process."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0
        gc.callbacks.append(self._on_collect)

    def _on_collect(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = perf_counter()
        else:
            self.seconds += perf_counter() - self._began


_collector = _CollectorClock()


class InlinePolicy:
    """Tracks a flow's chain run times and says whether the next run may go inline."""

    def __init__(
        self,
        enabled: bool | None = None,
        *,
        fast_seconds: float = 0.0002,
        proof_runs: int = 200,
        demote_seconds: float = 0.002,
        heavy_window: int = 1000,
    ) -> None:
        if enabled is None:
            enabled = os.environ.get(INLINE_ENV, "1").lower() not in ("0", "false", "no")
        self.enabled = enabled
        self.fast_seconds = fast_seconds
        self.proof_runs = proof_runs
        self.demote_seconds = demote_seconds
        self.inline = False
        self.demoted = not enabled
        self.heavy_window = heavy_window
        self._fast_runs = 0
        self._inline_runs = 0
        self._last_heavy = -heavy_window - 1
        """The inline run (by number) that last computed for longer than ``demote_seconds``."""
        self._base: Base | None = None
        """The loop thread's counters as read in this loop iteration."""

    def start(self) -> Mark:
        """Call in the thread about to run the chain; pass the mark to ``finish``."""
        if self.demoted:  # nothing more to decide: spare the system call
            return (perf_counter(), 0, 0, 0.0, 0)
        voluntary, involuntary = _switches()
        return (perf_counter(), voluntary, involuntary, _collector.seconds, ACTIVITY.count)

    def start_inline(self) -> Mark:
        """``start`` for a run on the running event loop: the thread's counters as last read in
        this loop iteration (read now if they were not)."""
        base = self._base
        began = perf_counter()
        if base is None or base[0] != get_ident() or began - base[1] > BASE_SECONDS:
            base = self._rebase()
        return (began, base[2], base[3], _collector.seconds, base[4])

    def _rebase(self, switches: tuple[int, int] | None = None) -> Base:
        """Read (or take) the loop thread's counters as the base of the next inline runs; they
        are forgotten when the event loop next turns (it may wait in its selector then)."""
        voluntary, involuntary = _switches() if switches is None else switches
        loop = _get_running_loop()
        base = (get_ident(), perf_counter(), voluntary, involuntary, ACTIVITY.count, loop)
        if loop is not None:
            if self._base is None or self._base[5] is not loop:  # else its forgetting is due
                loop.call_soon(self._forget, loop)
            self._base = base
        return base  # type: ignore[return-value]

    def _forget(self, loop: AbstractEventLoop) -> None:
        if self._base is not None and self._base[5] is loop:
            self._base = None

    def finish(self, mark: Mark, inline: bool) -> None:
        """Account the run that started at ``mark`` (same thread); ``inline``: it ran on the loop."""
        seconds = perf_counter() - mark[0]
        if inline and seconds <= self.demote_seconds:  # the inline mode's steady state
            self._inline_runs += 1
            return
        if seconds <= self.fast_seconds or self.demoted:
            self.record(seconds, inline=inline)
            return
        collecting = _collector.seconds - mark[3]
        seconds = max(0.0, seconds - collecting)
        voluntary, involuntary = _switches()
        if inline and self._base is not None:
            self._rebase((voluntary, involuntary))  # the next inline runs measure from here
        waited = RUSAGE_THREAD is None or voluntary > mark[1]
        # on the core all along (no switch at all): it computed; else its CPU is not known
        cpu = seconds if not waited and involuntary == mark[2] else 0.0
        if waited and exporting_since(mark[4]):
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
            self._inline_runs += 1
            if seconds <= self.demote_seconds or not (waited or cpu > self.demote_seconds):
                return
            if waited or self._inline_runs - self._last_heavy <= self.heavy_window:
                self.inline = False
                self.demoted = True
            self._last_heavy = self._inline_runs
        elif self.inline:
            return  # a pool run that began before the promotion proves nothing more
        elif seconds <= self.fast_seconds:
            self._fast_runs += 1
            if self._fast_runs >= self.proof_runs:
                self.inline = True
        elif waited or cpu > self.fast_seconds:
            self._fast_runs = 0

    def call(self, func: Callable[..., Any], arguments: dict[str, Any], inline: bool) -> Any:
        """``func(**arguments)``, timed for this policy (``inline``: on the event loop, where a
        failure ends the inline mode)."""
        if inline:
            return self.call_inline(func, arguments)
        mark = self.start()
        try:
            result = func(**arguments)
        except BaseException:
            if inline:
                self.failed()
            raise
        self.finish(mark, inline)
        return result

    def call_inline(
        self, func: Callable[..., Any], arguments: dict[str, Any], owner: UsageOwner | None = None
    ) -> Any:
        """``call(func, arguments, inline=True)`` in one frame: what every inline run goes through.
        ``owner``: what the run's LLM calls count their tokens to (``usage_owner``, set here: the
        caller runs this in a context of the run's own)."""
        if owner is not None:
            usage_owner.set(owner)
        base = self._base
        began = perf_counter()
        if base is None or base[0] != get_ident() or began - base[1] > BASE_SECONDS:
            base = self._rebase()
        collected = _collector.seconds
        try:
            result = func(**arguments)
        except BaseException:
            self.failed()
            raise
        if perf_counter() - began <= self.demote_seconds:  # the inline mode's steady state
            self._inline_runs += 1
        else:
            self.finish((began, base[2], base[3], collected, base[4]), True)
        return result

    def failed(self) -> None:
        """An inline run raised: it may be a tool that cannot run on the loop; stop inlining."""
        if self.inline:
            self.inline = False
            self.demoted = True
