"""Finished spans leave the request path here: a bounded queue, drained by one thread in batches.

``QueueProcessor`` replaces the SDK's batch processor for one reason: drops must be counted
(``flowport_trace_spans_dropped_total``). ``on_end`` is a length check and a deque append; the
exporters (OTLP, Azure Monitor, the built-in JSON lines) encode in the thread.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import orjson
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("flowport.tracing")

QUEUE_SIZE = 4096
BATCH_SIZE = 512
INTERVAL_SECONDS = 1.0
FILE_LIMIT = 16 * 1024 * 1024
"""Bytes of one built-in trace file; past it the file starts over (the store keeps what it read)."""


class QueueProcessor(SpanProcessor):
    """Spans queued as they end (dropped and counted when ``queue_size`` are waiting), exported
    in batches of up to ``batch_size`` every ``interval`` seconds or as soon as a batch is full."""

    def __init__(
        self,
        exporters: Sequence[SpanExporter],
        on_drop: Callable[[int], None] = lambda count: None,
        queue_size: int = QUEUE_SIZE,
        batch_size: int = BATCH_SIZE,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.exporters = list(exporters)
        self.on_drop = on_drop
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.interval = interval
        self.dropped = 0
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopped:
            return
        queue = self._queue
        if len(queue) >= self.queue_size:
            self._drop(1)
            return
        queue.append(span)
        if self._thread is None:
            self._start()
        if len(queue) >= self.batch_size:
            self._wake.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self.on_drop(count)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flowport-traces", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            queue = self._queue
            while queue:
                batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
                for exporter in self.exporters:
                    try:
                        result = exporter.export(batch)
                    except Exception:  # an exporter's bug must not stop the others
                        log.exception("exporting %d spans failed", len(batch))
                        result = SpanExportResult.FAILURE
                    if result is not SpanExportResult.SUCCESS:
                        self._drop(len(batch))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._drain()
        for exporter in self.exporters:
            exporter.force_flush(timeout_millis)
        return True

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self._drain()
        for exporter in self.exporters:
            exporter.shutdown()


def _hex(number: int, width: int) -> str:
    return f"{number:0{width}x}"


def span_record(span: ReadableSpan, resource: dict[str, Any]) -> dict[str, Any]:
    """One span as the built-in store keeps it (JSON-ready)."""
    context = span.context
    parent = span.parent
    status = span.status
    return {
        "trace_id": _hex(context.trace_id, 32),
        "span_id": _hex(context.span_id, 16),
        "parent_id": _hex(parent.span_id, 16) if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "status": status.status_code.name,
        "status_message": status.description,
        "attributes": {**resource, **dict(span.attributes or {})},
        "events": [
            {"name": event.name, "time": event.timestamp, "attributes": dict(event.attributes or {})}
            for event in span.events
        ],
    }


class JsonLinesExporter(SpanExporter):
    """The built-in store's exporter: one JSON line per span, appended to an open file.

    ``scrub`` replaces secret values in each line; the file starts over past ``limit`` bytes.
    """

    def __init__(
        self,
        file: BinaryIO,
        resource: dict[str, Any],
        scrub: Callable[[str], str] | None = None,
        limit: int = FILE_LIMIT,
    ) -> None:
        self.file = file
        self.resource = resource
        self.scrub = scrub
        self.limit = limit

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            line = orjson.dumps(span_record(span, self.resource), default=str)
            if self.scrub is not None:
                line = self.scrub(line.decode()).encode()
            lines.append(line + b"\n")
        data = b"".join(lines)
        try:
            fd = self.file.fileno()
            if os.fstat(fd).st_size + len(data) > self.limit:
                os.ftruncate(fd, 0)
            os.write(fd, data)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
