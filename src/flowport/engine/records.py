"""Run records: what happened to each node of a line, and to the line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from flowport.tools.usage import Usage
from flowport.tracing.propagation import traceparent


class Status(StrEnum):
    COMPLETED = "Completed"
    FAILED = "Failed"
    BYPASSED = "Bypassed"
    CANCELED = "Canceled"
    RUNNING = "Running"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class NodeRun:
    node: str
    status: Status = Status.RUNNING
    start_time: datetime | None = None
    end_time: datetime | None = None
    inputs: dict[str, Any] | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)
    span_id: int | None = field(default=None, repr=False, compare=False)
    """Its trace span's id, while tracing (``engine.spans``: the span is built from this record)."""
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """What it raised, when it failed while tracing (its span's ``exception`` event)."""

    @property
    def duration(self) -> float | None:
        if self.start_time and self.end_time:
            return (self.end_time - self.start_time).total_seconds()
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status.value,
            "start_time": self.start_time.isoformat() if self.start_time else None,
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "duration": self.duration,
            "inputs": self.inputs,
            "output": self.output,
            "error": self.error,
            "usage": self.usage.to_dict(),
        }


@dataclass
class LineRun:
    run_id: str
    line_number: int | None
    inputs: dict[str, Any]
    status: Status = Status.RUNNING
    start_time: datetime = field(default_factory=now)
    end_time: datetime | None = None
    node_runs: dict[str, NodeRun] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    span: Any = field(default=None, repr=False, compare=False)
    """Its open trace span, while tracing (``engine.spans``)."""
    traced: Any = field(default=None, repr=False, compare=False)
    """The line's span (``tracing.spans.Parent``) once traced, kept after it ends for ``traceparent``."""

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the line's span (when traced): what the caller's next hop
        continues. Formatted when asked for, not on every traced line."""
        return traceparent(self.traced) if self.traced is not None else None

    @property
    def duration(self) -> float | None:
        return (self.end_time - self.start_time).total_seconds() if self.end_time else None

    @property
    def usage(self) -> Usage:
        total = Usage()
        for run in self.node_runs.values():
            total.add(run.usage.prompt_tokens, run.usage.completion_tokens)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "line_number": self.line_number,
            "status": self.status.value,
            "start_time": self.start_time.isoformat(),
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "duration": self.duration,
            "inputs": self.inputs,
            "error": self.error,
            "usage": self.usage.to_dict(),
            "node_runs": {name: run.to_dict() for name, run in self.node_runs.items()},
        }
