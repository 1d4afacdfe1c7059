"""Run records: what happened to each node of a line, and to the line.

Times are kept as the wall clock's seconds (``clock()``, one cheap read) and read as UTC
``datetime`` values (``start_time``, ``end_time``) only when someone asks: building a
``datetime`` costs more than the rest of a small flex line's record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from time import time as clock
from typing import Any

from flowport.tools.usage import Usage
from flowport.tracing.propagation import traceparent


class Status(StrEnum):
    COMPLETED = "Completed"
    FAILED = "Failed"
    BYPASSED = "Bypassed"
    CANCELED = "Canceled"
    RUNNING = "Running"


def _as_datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _as_seconds(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _duration(started: float | None, ended: float | None) -> float | None:
    """Seconds between two clock readings, to the microsecond as the datetimes give it."""
    if started is None or ended is None:
        return None
    return (_as_datetime(ended) - _as_datetime(started)).total_seconds()  # type: ignore[operator]


class _Times:
    """``start_time``/``end_time`` as datetimes over the ``started``/``ended`` clock readings."""

    __slots__ = ()
    started: float | None
    ended: float | None

    @property
    def start_time(self) -> datetime | None:
        return _as_datetime(self.started)

    @start_time.setter
    def start_time(self, when: datetime | None) -> None:
        self.started = _as_seconds(when)

    @property
    def end_time(self) -> datetime | None:
        return _as_datetime(self.ended)

    @end_time.setter
    def end_time(self, when: datetime | None) -> None:
        self.ended = _as_seconds(when)

    @property
    def duration(self) -> float | None:
        return _duration(self.started, self.ended)


@dataclass(slots=True, init=False)  # built by hand: one per node of every line
class NodeRun(_Times):
    node: str
    status: Status
    started: float | None
    """When it started (``clock()``); ``start_time`` gives it as a datetime."""
    ended: float | None
    inputs: dict[str, Any] | None
    output: Any
    error: dict[str, Any] | None
    _usage: Usage | None = field(repr=False, compare=False)
    """Its token usage, made when first asked for (most node runs never use a token)."""
    span_id: int | None = field(repr=False, compare=False)
    """Its trace span's id, while tracing (``engine.spans``: the span is built from this record)."""
    exception: BaseException | None = field(repr=False, compare=False)
    """What it raised, when it failed while tracing (its span's ``exception`` event)."""

    def __init__(
        self,
        node: str,
        status: Status = Status.RUNNING,
        started: float | None = None,
        ended: float | None = None,
        inputs: dict[str, Any] | None = None,
        output: Any = None,
        error: dict[str, Any] | None = None,
        usage: Usage | None = None,
        span_id: int | None = None,
        exception: BaseException | None = None,
    ) -> None:
        self.node = node
        self.status = status
        self.started = started
        self.ended = ended
        self.inputs = inputs
        self.output = output
        self.error = error
        self._usage = usage
        self.span_id = span_id
        self.exception = exception

    @property
    def usage(self) -> Usage:
        """Tokens its LLM calls used (``tools.usage.record_usage`` adds to it)."""
        usage = self._usage
        if usage is None:
            usage = self._usage = Usage()
        return usage

    @usage.setter
    def usage(self, usage: Usage) -> None:
        self._usage = usage

    def add_usage(self, prompt: int | None, completion: int | None) -> None:
        """Tokens its LLM calls used: what they count to while it runs."""
        self.usage.add(prompt, completion)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status.value,
            "start_time": _isoformat(self.started),
            "end_time": _isoformat(self.ended),
            "duration": self.duration,
            "inputs": self.inputs,
            "output": self.output,
            "error": self.error,
            "usage": self.usage.to_dict(),
        }


@dataclass(slots=True, weakref_slot=True, init=False)  # weakly referable: tests check a traced line is freed
class LineRun(_Times):
    run_id: str
    line_number: int | None
    inputs: dict[str, Any]
    status: Status
    started: float
    """When it started (``clock()``); ``start_time`` gives it as a datetime."""
    ended: float | None
    _node_runs: dict[str, NodeRun] | None = field(repr=False, compare=False)
    error: dict[str, Any] | None
    span: Any = field(repr=False, compare=False)
    """Its open trace span, while tracing (``engine.spans``)."""
    traced: Any = field(repr=False, compare=False)
    """The line's span (``tracing.spans.Parent``) once traced, kept after it ends for ``traceparent``."""
    one_node: Sequence[Any] | None = field(repr=False, compare=False)
    """A line whose one node is the line itself (a flex entry's): the node's name, inputs, output
    and token usage (``(name, None, None, None)`` when made; a list once one is set), made into
    its ``NodeRun`` when ``node_runs`` is first read, with the line's status and times then.
    Until that read, token usage counts to the line run (``add_usage``)."""

    def __init__(
        self,
        run_id: str,
        line_number: int | None,
        inputs: dict[str, Any],
        status: Status = Status.RUNNING,
        started: float | None = None,
        ended: float | None = None,
        node_runs: dict[str, NodeRun] | None = None,
        error: dict[str, Any] | None = None,
        span: Any = None,
        traced: Any = None,
        one_node: Sequence[Any] | None = None,
    ) -> None:
        self.run_id = run_id
        self.line_number = line_number
        self.inputs = inputs
        self.status = status
        self.started = clock() if started is None else started
        self.ended = ended
        self._node_runs = {} if node_runs is None and one_node is None else node_runs
        self.error = error
        self.span = span
        self.traced = traced
        self.one_node = one_node

    @classmethod
    def one_node_line(
        cls, run_id: str, line_number: int | None, inputs: dict[str, Any], one_node: Sequence[Any]
    ) -> LineRun:
        """``LineRun(run_id, line_number, inputs, one_node=one_node)``, spared the constructor's
        defaults (one for every flex line)."""
        run = _new_record(cls)
        run.run_id = run_id
        run.line_number = line_number
        run.inputs = inputs
        run.status = _RUNNING
        run.started = clock()
        run.ended = None
        run._node_runs = None
        run.error = None
        run.span = None
        run.traced = None
        run.one_node = one_node
        return run

    @property
    def node_runs(self) -> dict[str, NodeRun]:
        """Each node's run, by node name."""
        runs = self._node_runs
        if runs is None:  # the line's one node, recorded when first asked for
            name, inputs, output, usage = self.one_node  # type: ignore[misc]
            node = NodeRun(name, self.status, self.started, self.ended, inputs, output, None, usage)
            runs = self._node_runs = {name: node}
        return runs

    @node_runs.setter
    def node_runs(self, runs: dict[str, NodeRun]) -> None:
        self._node_runs = runs

    def add_usage(self, prompt: int | None, completion: int | None) -> None:
        """Tokens used by the line's one node (see ``one_node``): what LLM calls count to."""
        one = self.one_node
        runs = self._node_runs
        if runs is not None:
            runs[one[0]].usage.add(prompt, completion)  # type: ignore[index]
            return
        if one[3] is None:  # type: ignore[index]
            one = self.one_node = [one[0], one[1], one[2], Usage()]  # type: ignore[index]
        one[3].add(prompt, completion)  # type: ignore[index]

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the line's span (when traced): what the caller's next hop
        continues. Formatted when asked for, not on every traced line."""
        return traceparent(self.traced) if self.traced is not None else None

    @property
    def usage(self) -> Usage:
        total = Usage()
        for run in self.node_runs.values():
            if (usage := run._usage) is not None:
                total.add(usage.prompt_tokens, usage.completion_tokens)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "line_number": self.line_number,
            "status": self.status.value,
            "start_time": _isoformat(self.started),
            "end_time": _isoformat(self.ended),
            "duration": self.duration,
            "inputs": self.inputs,
            "error": self.error,
            "usage": self.usage.to_dict(),
            "node_runs": {name: run.to_dict() for name, run in self.node_runs.items()},
        }


_new_record = object.__new__
_RUNNING = Status.RUNNING


def _isoformat(seconds: float | None) -> str | None:
    when = _as_datetime(seconds)
    return when.isoformat() if when is not None else None
