"""Ended spans leave the request path here: a bounded queue, drained by one thread in batches.

``on_end`` is a length check and a deque append; drops (queue full, export failed) are counted
for ``/metrics``. The exporters encode in the thread: JSON lines for the built-in store, or the
OpenTelemetry SDK's spans for its exporters (OTLP, Azure Monitor), built from ours there.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO, Protocol

import orjson

from flowport.tracing.spans import Span

log = logging.getLogger("flowport.tracing")

QUEUE_SIZE = 4096
BATCH_SIZE = 128
INTERVAL_SECONDS = 0.25
YIELD_EVERY = 32
"""Spans encoded between two yields of the GIL: the export thread never holds it for long, so an
event loop thread waiting for it (a line running inline, ``engine/inline.py``) waits well under 1 ms."""
FILE_LIMIT = 16 * 1024 * 1024
"""Bytes of one built-in trace file; past it the file starts over (the store keeps what it read)."""


def yielding(spans: Sequence[Span]) -> Iterator[Span]:
    """The spans, with the GIL given up every ``YIELD_EVERY`` of them."""
    for index, span in enumerate(spans):
        if index and not index % YIELD_EVERY:
            time.sleep(0)
        yield span


class _Activity:
    """How many times an export thread started or finished a drain: odd while one is draining."""

    count = 0


ACTIVITY = _Activity()


def exporting_since(mark: int) -> bool:
    """Whether an export thread has been draining at some point since ``ACTIVITY.count`` was ``mark``.

    The inline policy (``engine/inline.py``) asks: a slow run that waited while the export thread
    held the GIL lost the core to it, it did not block on I/O."""
    return ACTIVITY.count != mark or mark % 2 == 1


class Exporter(Protocol):
    def export(self, spans: Sequence[Span]) -> bool: ...

    def shutdown(self) -> None: ...


class QueueProcessor:
    """Spans queued as they end (dropped and counted when ``queue_size`` are waiting), exported
    in batches of up to ``batch_size`` every ``interval`` seconds or as soon as a batch is full."""

    def __init__(
        self,
        exporters: Sequence[Exporter],
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
        self._queue: collections.deque[Span] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def on_end(self, span: Span) -> None:
        queue = self._queue
        if len(queue) >= self.queue_size or self._stopped:
            span.expand = None  # (see _export)
            self._drop(1)
            return
        queue.append(span)
        if len(queue) >= self.batch_size:
            self._wake.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self.on_drop(count)

    def start(self) -> None:
        """Start the export thread: before the first request (starting it waits for it to run)."""
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
            ACTIVITY.count += 1
            try:
                self._export()
            finally:
                ACTIVITY.count += 1

    def _export(self) -> None:
        queue = self._queue
        while queue:
            batch = []
            for _ in range(min(self.batch_size, len(queue))):
                span = queue.popleft()
                batch.append(span)
                if span.expand is not None:
                    batch.extend(span.expand())
                    span.expand = None  # it refers to the span: let reference counting free the line
            for exporter in self.exporters:
                time.sleep(0)  # let a waiting thread have the GIL between exports
                try:
                    ok = exporter.export(batch)
                except Exception:  # an exporter's bug must not stop the others
                    log.exception("exporting %d spans failed", len(batch))
                    ok = False
                if not ok:
                    self._drop(len(batch))

    def flush(self) -> None:
        """Export what is queued now (tests, shutdown)."""
        self._drain()

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._drain()
        for exporter in self.exporters:
            exporter.shutdown()


def span_record(span: Span, resource: dict[str, Any]) -> dict[str, Any]:
    """One span as the built-in store keeps it (JSON-ready)."""
    return {
        "trace_id": f"{span.trace_id:032x}",
        "span_id": f"{span.span_id:016x}",
        "parent_id": f"{span.parent_id:016x}" if span.parent_id is not None else None,
        "name": span.name,
        "kind": span.kind,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status,
        "status_message": span.status_message,
        "attributes": {**resource, **span.attributes},
        "events": [
            {"name": name, "time": when, "attributes": attributes} for name, when, attributes in span.events
        ],
    }


def scrubbed(value: Any, scrub: Callable[[str], str]) -> Any:
    """``value`` with ``scrub`` applied to every text in it (attribute values, messages, content)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrubbed(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrubbed(v, scrub) for v in value)
    return value


class JsonLinesExporter:
    """The built-in store's exporter: one JSON line per span, appended to an open file.

    ``scrub`` replaces secret values in each text of a span; the file starts over past ``limit`` bytes.
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

    def export(self, spans: Sequence[Span]) -> bool:
        lines = []
        for span in yielding(spans):
            record = span_record(span, self.resource)
            if self.scrub is not None:  # before encoding: a secret is matched as it is, not escaped
                record = scrubbed(record, self.scrub)
            lines.append(orjson.dumps(record, default=str) + b"\n")
        data = b"".join(lines)
        try:
            fd = self.file.fileno()
            if os.fstat(fd).st_size + len(data) > self.limit:
                os.ftruncate(fd, 0)
            os.write(fd, data)
        except OSError:
            return False
        return True

    def shutdown(self) -> None:
        pass


class SdkExporter:
    """An OpenTelemetry SDK exporter (OTLP, Azure Monitor) fed with our spans, made SDK spans here;
    ``scrub`` replaces secret values in each text, as for the built-in store."""

    def __init__(self, exporter: Any, resource: Any, scrub: Callable[[str], str] | None = None) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.exporter = exporter
        self.resource = resource
        self.scope = InstrumentationScope("flowport")
        self.scrub = scrub or (lambda text: text)

    def export(self, spans: Sequence[Span]) -> bool:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.trace.export import SpanExportResult
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        sampled = TraceFlags(TraceFlags.SAMPLED)
        scrub = self.scrub
        converted = []
        for span in yielding(spans):
            parent = None
            if span.parent_id is not None:
                parent = SpanContext(span.trace_id, span.parent_id, is_remote=True, trace_flags=sampled)
            message = scrub(span.status_message) if span.status_message else span.status_message
            status = Status(StatusCode.ERROR, message) if span.status == "ERROR" else Status()
            converted.append(
                ReadableSpan(
                    name=span.name,
                    context=SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=sampled),
                    parent=parent,
                    resource=self.resource,
                    attributes=scrubbed(span.attributes, scrub),
                    events=[Event(name, scrubbed(attrs, scrub), when) for name, when, attrs in span.events],
                    kind=SpanKind[span.kind],
                    status=status,
                    start_time=span.start_time,
                    end_time=span.end_time,
                    instrumentation_scope=self.scope,
                )
            )
        return self.exporter.export(converted) is SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.exporter.shutdown()
