"""The request path's side of tracing: light spans, made and ended in a few microseconds.

The OpenTelemetry SDK's spans cost tens of microseconds each (locks, attribute validation, the
context API), as much as a whole line of a small Python flow. So the request path makes these
instead: a slotted record with random ids, a dict of attributes and two clock readings; the
current span lives in a ContextVar. Ended spans go to the sink (the export queue); exporters turn
them into what they send, in their own thread (``export.py``). With no sink installed, ``start``
returns None and callers skip the rest: tracing off costs one check per span.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

import orjson

from flowport.tracing.sampling import Sampler

CONTENT_LIMIT = 32 * 1024
"""Characters of one input, output or message list kept on a span."""
INTERNAL, SERVER, CLIENT = "INTERNAL", "SERVER", "CLIENT"
_ids = random.Random()


class Parent:
    """A span's parent as ids: a caller's (from ``traceparent``, ``remote``), or a span of this
    process; ``sampled``: its trace is being recorded (``sampling.py``)."""

    __slots__ = ("remote", "sampled", "span_id", "trace_id")

    def __init__(self, trace_id: int, span_id: int, sampled: bool = True, remote: bool = False) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.remote = remote


class Span(Parent):
    """One operation: name, ids, times (ns since the epoch), attributes, status and events."""

    __slots__ = (
        "attributes",
        "end_time",
        "events",
        "expand",
        "kind",
        "name",
        "parent_id",
        "start_time",
        "status",
        "status_message",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        parent_id: int | None,
        kind: str,
        attributes: dict[str, Any],
        sampled: bool = True,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = _ids.getrandbits(64) or 1
        self.sampled = sampled
        self.remote = False
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self.status = "UNSET"
        self.status_message: str | None = None
        self.end_time: int | None = None
        self.start_time = time.time_ns()
        self.expand: Callable[[], list[Span]] | None = None
        """Builds spans that were recorded as something cheaper (a line's node runs), in the export thread."""

    @classmethod
    def finished(
        cls,
        name: str,
        ids: tuple[int, int, int | None],
        times: tuple[int, int],
        attributes: dict[str, Any],
        status: tuple[str, str | None] = ("UNSET", None),
        events: list[tuple[str, int, dict[str, Any]]] | None = None,
    ) -> Span:
        """A span recorded after the fact: ``ids`` (trace, span, parent), ``times`` (start, end ns)."""
        span = cls.__new__(cls)
        span.trace_id, span.span_id, span.parent_id = ids
        span.name, span.kind, span.attributes = name, INTERNAL, attributes
        span.start_time, span.end_time = times
        span.status, span.status_message = status
        span.events = events or []
        span.expand = None
        span.sampled, span.remote = True, False
        return span

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def add_event(self, name: str, attributes: dict[str, Any]) -> None:
        self.events.append((name, time.time_ns(), attributes))

    def end(self) -> None:
        """Close the span (once) and hand it to the sink if it is kept: sampled, failed or slow
        (an unsampled span is this process's first of its trace: its children were never made)."""
        if self.end_time is not None:
            return
        self.end_time = time.time_ns()
        sink = STATE.sink
        if sink is None:
            return
        if (
            self.sampled
            or self.status == "ERROR"
            or STATE.sampler.slow(self.name, self.end_time - self.start_time)
        ):
            self.sampled = True
            sink(self)
        else:
            self.expand = None


class _State:
    sink: Callable[[Span], None] | None = None
    content: bool = False
    sampler: Sampler = Sampler()


STATE = _State()
CURRENT: ContextVar[Parent | None] = ContextVar("flowport_span", default=None)


def install(
    sink: Callable[[Span], None] | None, content: bool = False, sampler: Sampler | None = None
) -> None:
    """Trace from now on, ended spans going to ``sink`` (None: stop); ``content``: keep inputs,
    outputs and LLM messages; ``sampler``: which traces are recorded (default: every one)."""
    STATE.sink = sink
    STATE.content = content
    STATE.sampler = sampler or Sampler()


def enabled() -> bool:
    return STATE.sink is not None


def capture_content() -> bool:
    """Whether spans may carry inputs, outputs and LLM messages (the deployment opted in)."""
    return STATE.content


def start(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    kind: str = INTERNAL,
    parent: Parent | None = None,
) -> Span | None:
    """A started span, child of ``parent`` (else of the current span); None when not tracing, or
    when its parent is a span of this process that is not recorded.

    A span with no parent in this process is recorded when its caller's trace is (a remote
    parent's sampled flag) or, with no caller, when the sampler takes it. One that is not recorded
    still ends kept if it fails or is slow (``Span.end``); its children are never made. A request's
    own span comes from ``begin``, which makes no span object for a request that is not recorded."""
    if STATE.sink is None:
        return None
    if parent is None:
        parent = CURRENT.get()
    if parent is None:
        trace_id = new_trace_id()
        return Span(name, trace_id, None, kind, dict(attributes or {}), STATE.sampler.root(trace_id))
    if not parent.sampled and not parent.remote:
        return None
    return Span(name, parent.trace_id, parent.span_id, kind, dict(attributes or {}), parent.sampled)


class Unrecorded(Parent):
    """A request the sampler passed over, as ids and a start: its ``traceparent`` says ``-00``
    and no span object is made for it unless ``finish`` keeps it (failed, or slow)."""

    __slots__ = ("name", "parent_id", "start_time")

    def __init__(self, name: str, trace_id: int, parent_id: int | None) -> None:
        super().__init__(trace_id, new_id(), sampled=False)
        self.name = name
        self.parent_id = parent_id
        self.start_time = time.time_ns()

    def finish(
        self,
        kind: str,
        attributes: Callable[[], dict[str, Any]],
        error: str | None = None,
        keep: bool = False,
    ) -> None:
        """Record it after all, as a span of ``kind`` with ``attributes()``, if it failed (``error``:
        why), ``keep`` says so, or it was slow for its name; else forget it."""
        ended = time.time_ns()
        sink = STATE.sink
        if sink is None:
            return
        if error is None and not keep and not STATE.sampler.slow(self.name, ended - self.start_time):
            return
        ids = (self.trace_id, self.span_id, self.parent_id)
        status = ("ERROR", error) if error is not None else ("UNSET", None)
        span = Span.finished(self.name, ids, (self.start_time, ended), attributes(), status)
        span.kind = kind
        sink(span)


def begin(
    name: str, attributes: dict[str, Any], kind: str, parent: Parent | None, edge: bool = False
) -> Span | Unrecorded | None:
    """A request's span when the sampler takes it, its ``Unrecorded`` when not, None when not
    tracing. ``parent``: the caller's, whose decision is followed, except at the ``edge`` (the
    gateway: the operator's sampler decides, not the client's). ``attributes`` become the span's."""
    if STATE.sink is None:
        return None
    if parent is None:
        trace_id, parent_id = new_trace_id(), None
        sampled = STATE.sampler.root(trace_id)
    else:
        trace_id, parent_id = parent.trace_id, parent.span_id
        # at the edge a ratio is decided on a number of ours: the client picks its trace ids
        sampled = STATE.sampler.root(new_trace_id()) if edge else parent.sampled
    if sampled:
        return Span(name, trace_id, parent_id, kind, attributes)
    return Unrecorded(name, trace_id, parent_id)


def exception_event(exc: BaseException) -> dict[str, Any]:
    """The attributes of an ``exception`` event, as OpenTelemetry names them."""
    return {
        "exception.type": type(exc).__name__,
        "exception.message": str(exc),
        "exception.stacktrace": "".join(traceback.format_exception(exc)),
    }


def new_id() -> int:
    return _ids.getrandbits(64) or 1


def new_trace_id() -> int:
    return _ids.getrandbits(128) or 1


def fail(span: Span, exc: BaseException | None, message: str | None = None) -> None:
    """The span ends in error: an ``exception`` event (when there is one) and the ERROR status."""
    if exc is not None:
        span.add_event("exception", exception_event(exc))
    span.status = "ERROR"
    span.status_message = message if message is not None else str(exc)


def activate(parent: Parent) -> Token[Parent | None]:
    """Make ``parent`` the current span (the parent of spans started next); returns the token
    for ``deactivate``."""
    return CURRENT.set(parent)


def deactivate(token: Token[Parent | None]) -> None:
    CURRENT.reset(token)


def content(value: Any) -> str:
    """A value as a span attribute: its JSON, cut at ``CONTENT_LIMIT``."""
    try:
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "..."
