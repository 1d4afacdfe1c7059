"""The built-in trace store: the spans that instances and the gateway write, read back as traces.

The data plane's processes append spans as JSON lines (``*.traces.jsonl`` under the runtime's
log folder: one file per instance, one for the gateway; each starts over past its size limit).
This store reads the files incrementally, keeps the newest ``max_traces`` traces no older than
``max_age`` in memory, and answers the API's list and show.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from flowport.control.data import parse_time
from flowport.control.errors import ApiError

TRACE_GLOB = "**/*.traces.jsonl"
MAX_TRACES = 2000
MAX_AGE_SECONDS = 24 * 3600
LLM_OPERATIONS = frozenset({"chat", "text_completion", "embeddings"})
MAX_READ = 64 * 1024 * 1024
"""Bytes read from one file per refresh: an instance writes at most 16 MiB before starting over, but
flow code holds the file too; past this, the older part is skipped."""


def iso(nanoseconds: int | None) -> str | None:
    if nanoseconds is None:
        return None
    when = datetime.fromtimestamp(nanoseconds / 1e9, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _nanoseconds(text: str, name: str) -> int:
    return int(parse_time(text, name).timestamp() * 1e9)


@dataclass
class TraceQuery:
    """Which traces to list: the API's query parameters, the CLI's flags."""

    endpoint: str | None = None
    deployment: str | None = None
    request_id: str | None = None
    since: str | None = None
    until: str | None = None
    status: str | None = None
    limit: int = 100


@dataclass
class _File:
    offset: int = 0
    inode: int = 0


@dataclass
class Trace:
    trace_id: str
    spans: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def start(self) -> int:
        return min(s["start"] or 0 for s in self.spans.values())

    @property
    def end(self) -> int:
        return max(s["end"] or 0 for s in self.spans.values())

    def root(self) -> dict[str, Any]:
        """The span without a parent here (the gateway's, or the line's when the gateway did not trace)."""
        roots = [s for s in self.spans.values() if s.get("parent_id") not in self.spans]
        return min(roots or self.spans.values(), key=lambda s: s["start"] or 0)

    def attribute(self, name: str) -> Any:
        for span in sorted(self.spans.values(), key=lambda s: s["start"] or 0):
            value = span.get("attributes", {}).get(name)
            if value is not None:
                return value
        return None

    def summary(self) -> dict[str, Any]:
        root = self.root()
        tokens = {"input": 0, "output": 0}
        for span in self.spans.values():
            attributes = span.get("attributes") or {}
            if attributes.get("gen_ai.operation.name") in LLM_OPERATIONS:
                tokens["input"] += int(attributes.get("gen_ai.usage.input_tokens") or 0)
                tokens["output"] += int(attributes.get("gen_ai.usage.output_tokens") or 0)
        failed = any(s.get("status") == "ERROR" for s in self.spans.values())
        return {
            "trace_id": self.trace_id,
            "name": root["name"],
            "start_time": iso(self.start),
            "duration_ms": round((self.end - self.start) / 1e6, 3),
            "status": "Failed" if failed else "Completed",
            "request_id": self.attribute("flowport.request_id"),
            "endpoint": self.attribute("flowport.endpoint"),
            "deployment": self.attribute("flowport.deployment"),
            "flow": self.attribute("flowport.flow"),
            "line_number": self.attribute("flowport.line_number"),
            "tokens": {**tokens, "total": tokens["input"] + tokens["output"]},
            "span_count": len(self.spans),
        }

    def document(self) -> dict[str, Any]:
        spans = sorted(self.spans.values(), key=lambda s: s["start"] or 0)
        return {
            **self.summary(),
            "spans": [
                {
                    **span,
                    "start_time": iso(span["start"]),
                    "end_time": iso(span["end"]),
                    "duration_ms": round(((span["end"] or 0) - (span["start"] or 0)) / 1e6, 3),
                    "events": [{**e, "time": iso(e.get("time"))} for e in span.get("events") or ()],
                }
                for span in spans
            ],
        }


def _span(line: bytes) -> dict[str, Any] | None:
    """The span a JSON line holds, or None when it is not a well-formed one (the file is written by
    an instance, whose flow code can write to it too)."""
    try:
        span = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not (
        isinstance(span, dict)
        and isinstance(span.get("trace_id"), str)
        and isinstance(span.get("span_id"), str)
        and isinstance(span.get("name"), str)
        and isinstance(span.get("start"), int)
        and isinstance(span.get("end"), int | None)
        and isinstance(span.get("parent_id"), str | None)
        and isinstance(span.get("attributes", {}), dict)
        and isinstance(span.get("events", []), list)
        and all(isinstance(e, dict) and isinstance(e.get("time"), int | None) for e in span.get("events", []))
    ):
        return None
    return span


def add_spans(
    traces: dict[str, Trace], lines: Iterable[bytes], identity: dict[str, str] | None = None
) -> None:
    """Add each JSON line's span to its trace in ``traces`` (lines that are no span are skipped);
    ``identity``: attributes that replace what the spans say (the endpoint and deployment whose
    folder the file is in)."""
    for line in lines:
        span = _span(line)
        if span is None:
            continue
        if identity:
            span["attributes"] = {**span.get("attributes", {}), **identity}
        trace_id, span_id = span["trace_id"], span["span_id"]
        trace = traces.get(trace_id)
        if trace is None:
            trace = traces[trace_id] = Trace(trace_id)
        trace.spans[span_id] = span


class TraceStore:
    """Recent traces from the span files under ``root`` (or the one file it names) and the
    instance log folders in ``also`` (another runtime's), bounded by count and age."""

    def __init__(
        self,
        root: Path,
        max_traces: int = MAX_TRACES,
        max_age: float = MAX_AGE_SECONDS,
        also: Sequence[Path] = (),
    ) -> None:
        self.root = root
        self.roots = [root, *also]
        self.max_traces = max_traces
        self.max_age = max_age
        self._files: dict[Path, _File] = {}
        self._traces: dict[str, Trace] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Read what the files gained since last time; forget what is past the bounds."""
        with self._lock:
            if self.root.is_file():
                paths = [self.root]
            else:
                paths = sorted(path for root in self.roots if root.is_dir() for path in root.glob(TRACE_GLOB))
            for path in paths:
                self._read(path, self._identity(path))
            for gone in set(self._files) - set(paths):
                del self._files[gone]
            self._prune()

    def _identity(self, path: Path) -> dict[str, str] | None:
        """An instance's file (``<endpoint>/<deployment>/<instance>.traces.jsonl``): who wrote it."""
        for root in self.roots:
            if path.is_relative_to(root):
                parts = path.relative_to(root).parts
                if len(parts) == 3:
                    return {"flowport.endpoint": parts[0], "flowport.deployment": parts[1]}
        return None

    def _read(self, path: Path, identity: dict[str, str] | None = None) -> None:
        state = self._files.setdefault(path, _File())
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                if stat.st_ino != state.inode or stat.st_size < state.offset:  # new, or started over
                    state.inode, state.offset = stat.st_ino, 0
                start = max(state.offset, stat.st_size - MAX_READ)
                file.seek(start)
                data = file.read(MAX_READ)
        except OSError:
            return
        if start > state.offset:  # the older part skipped: so is the rest of the line it cut
            cut = data.find(b"\n") + 1 or len(data)
            start, data = start + cut, data[cut:]
        complete = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        state.offset = start + complete
        self._add(data[:complete].splitlines(), identity)

    def _add(self, lines: Iterable[bytes], identity: dict[str, str] | None = None) -> None:
        add_spans(self._traces, lines, identity)

    def _prune(self) -> None:
        oldest = int((time.time() - self.max_age) * 1e9)
        keep = sorted(
            (t for t in self._traces.values() if t.end >= oldest), key=lambda t: t.start, reverse=True
        )[: self.max_traces]
        self._traces = {t.trace_id: t for t in keep}

    def list(self, query: TraceQuery | None = None) -> list[dict[str, Any]]:
        """Summaries of the traces ``query`` matches, newest first."""
        query = query or TraceQuery()
        start = _nanoseconds(query.since, "since") if query.since else None
        end = _nanoseconds(query.until, "until") if query.until else None
        endpoint, deployment, request_id, status = (
            query.endpoint,
            query.deployment,
            query.request_id,
            query.status,
        )
        self.refresh()
        found = []
        for trace in sorted(self._traces.values(), key=lambda t: t.start, reverse=True):
            if (start is not None and trace.start < start) or (end is not None and trace.start > end):
                continue
            summary = trace.summary()
            if (
                (endpoint and summary["endpoint"] != endpoint)
                or (deployment and summary["deployment"] != deployment)
                or (request_id and summary["request_id"] != request_id)
                or (status and summary["status"].lower() != status.lower())
            ):
                continue
            found.append(summary)
            if len(found) >= query.limit:
                break
        return found

    def get(self, trace_id: str) -> dict[str, Any]:
        self.refresh()
        trace = self._traces.get(trace_id.lower())
        if trace is None:
            raise ApiError(
                404,
                "TraceNotFound",
                f"no trace {trace_id!r} in the built-in store (list them: flowport trace list)",
            )
        return trace.document()
