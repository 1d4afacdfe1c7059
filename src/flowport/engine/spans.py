"""The engine's spans: one per line, made on the request path; one per node run, made later.

A line is a light span (``tracing.spans.Span``) made current while it runs. A node only gets a
span id (its LLM calls' spans name it as their parent); its span is built in the export thread
from its ``NodeRun`` record (times, status, error, tokens, inputs and outputs), which the engine
keeps anyway. So tracing adds two small objects per line and one id per node to the request
path. The line's span ends with the line, or with its last stream. A line the sampler did not
take (``tracing/sampling.py``) has no span and its nodes no ids: if it fails or is slow, its
span and theirs are built from the records after all, with new ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from time import time_ns
from typing import Any

from flowport import tracing
from flowport.engine.records import LineRun, NodeRun, Status, clock
from flowport.tracing.spans import (
    CURRENT,
    INTERNAL,
    STATE,
    Parent,
    Span,
    exception_event,
    new_id,
    new_trace_id,
)

LINE_KIND = "flowport.span_type"


class _Unrecorded:
    """A line the sampler passed over: what its span needs if it is kept after all."""

    __slots__ = ("attributes", "name", "parent")
    sampled = False

    def __init__(self, name: str, parent: Parent | None, attributes: Mapping[str, Any] | None) -> None:
        self.name = name
        self.parent = parent
        self.attributes = attributes


UNRECORDED = Parent(0, 0, sampled=False)
"""The current span while an unrecorded line runs: what it calls makes no spans."""


def _line_attributes(name: str, run: LineRun, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {LINE_KIND: "flow", "flowport.flow": name, "flowport.run_id": run.run_id}
    if attributes:
        attrs.update(attributes)
    if run.line_number is not None:
        attrs["flowport.line_number"] = run.line_number
    return attrs


def start_line(name: str, run: LineRun, attributes: Mapping[str, Any] | None = None) -> Any:
    """The line's span, made current (its nodes are its children): the context token, or None
    (not tracing, or inside a span of this process that is not recorded).

    The span is named after the flow (``flowport.flow`` in ``attributes`` wins over ``name``).
    A line the sampler passes over gets no span, only what one would need: ``end_line`` makes
    it after the fact if the line failed or was slow."""
    if STATE.sink is None:
        return None
    parent = CURRENT.get()
    if parent is None:
        trace_id = new_trace_id()
        sampled = STATE.sampler.root(trace_id)
    elif parent.sampled or parent.remote:
        trace_id, sampled = parent.trace_id, parent.sampled
    else:
        return None
    if not sampled:
        run.span = _Unrecorded(name, parent, attributes)
        return CURRENT.set(UNRECORDED)
    attrs = _line_attributes(name, run, attributes)
    parent_id = parent.span_id if parent is not None else None
    span = Span(attrs["flowport.flow"], trace_id, parent_id, INTERNAL, attrs)
    if STATE.content:
        attrs["flowport.inputs"] = tracing.content(run.inputs)
    run.span = run.traced = span
    return CURRENT.set(span)


def end_line(run: LineRun, token: Any, outputs: Mapping[str, Any] | None, node_attributes: Any) -> None:
    """Close the line's span (after its streams, if ``outputs`` hold some) and restore the context.

    ``node_attributes(name)``: a node span's fixed attributes."""
    tracing.deactivate(token)
    span = run.span
    if span is None:
        return
    if type(span) is _Unrecorded:
        run.span = None
        ended = run.ended if run.ended is not None else clock()
        if run.error is not None or STATE.sampler.slow(span.name, round((ended - run.started) * 1e9)):
            _record_late(run, span, node_attributes)
        return
    content = STATE.content
    span.expand = lambda: node_spans(span, run, node_attributes, content)
    streams = [v for v in (outputs or {}).values() if hasattr(v, "on_done")]
    if streams:
        waiting = [len(streams)]

        def one_done() -> None:
            waiting[0] -= 1
            if waiting[0] == 0:
                _close_line(run)

        for stream in streams:
            stream.on_done = one_done
        return
    _close_line(run, outputs)


def _error_message(run: LineRun) -> str:
    error = run.error or {}
    return f"{error.get('code')}: {error.get('message')}"


def _close_line(run: LineRun, outputs: Mapping[str, Any] | None = None) -> None:
    span = run.span
    if span is None:
        return
    run.span = None
    if run.error is not None:
        tracing.fail(span, None, _error_message(run))
    elif STATE.content and outputs is not None:
        span.attributes["flowport.outputs"] = tracing.content(outputs)
    span.end()


def _record_late(run: LineRun, line: _Unrecorded, node_attributes: Any, message: str | None = None) -> None:
    """Record an unrecorded line after all (it failed, was cancelled or was slow): its span and,
    in the export thread, its nodes' from their records. ``message``: why it failed, if not its error."""
    attrs = _line_attributes(line.name, run, line.attributes)
    if STATE.content:
        attrs["flowport.inputs"] = tracing.content(run.inputs)
    parent = line.parent
    ids = (
        (parent.trace_id, new_id(), parent.span_id)
        if parent is not None
        else (new_trace_id(), new_id(), None)
    )
    ended = time_ns() if run.ended is None else _ns(run.ended, 0)
    failed = message is not None or run.error is not None
    status = ("ERROR", message or _error_message(run)) if failed else ("UNSET", None)
    span = Span.finished(attrs["flowport.flow"], ids, (_ns(run.started, ended), ended), attrs, status)
    span.expand = lambda: node_spans(span, run, node_attributes, False, late=True)
    run.traced = span
    sink = STATE.sink
    if sink is not None:
        sink(span)


def cancel_line(run: LineRun, token: Any, node_attributes: Any) -> None:
    """The line was cancelled (its request timed out or went away): close its span."""
    tracing.deactivate(token)
    span = run.span
    if span is None:
        return
    run.span = None
    if type(span) is _Unrecorded:
        _record_late(run, span, node_attributes, "the line was cancelled")
        return
    span.expand = lambda: node_spans(span, run, node_attributes, False)
    tracing.fail(span, None, "the line was cancelled")
    span.end()


def start_node(node_run: NodeRun, line: Parent | None) -> Any:
    """Give the node its span id and make it current (its LLM calls' parent): the token, or None
    (the line is not traced, or not recorded)."""
    if line is None or not line.sampled:
        return None
    node_run.span_id = new_id()
    return tracing.activate(Parent(line.trace_id, node_run.span_id))


def node_failed(node_run: NodeRun, exc: BaseException | None) -> None:
    """Keep what a failed node raised, for its span's ``exception`` event."""
    if STATE.sink is not None and exc is not None:  # a failed line is kept, sampled or not
        node_run.exception = exc


def _ns(seconds: float | None, default: int) -> int:
    """A record's clock reading (to the microsecond) in nanoseconds, or ``default``."""
    return round(seconds * 1e6) * 1000 if seconds is not None else default


def node_spans(
    line: Span, run: LineRun, node_attributes: Any, content: bool, late: bool = False
) -> list[Span]:
    """The spans of a line's node runs, built from their records (in the export thread);
    ``content``: with their inputs and outputs; ``late``: the line was kept only as it ended
    (failed or slow), so no node has a span id yet. The line's token usage goes on ``line`` here."""
    usage = run.usage
    if usage.total_tokens:
        line.attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        line.attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
    found = []
    for node_run in list(run.node_runs.values()):
        span_id = node_run.span_id
        if span_id is None and not late and node_run.status is not Status.BYPASSED:
            continue  # never started (or recorded before tracing was on)
        start = _ns(node_run.started, line.start_time)
        end = _ns(node_run.ended, line.end_time or start)
        attributes = dict(node_attributes(node_run.node))
        attributes["flowport.status"] = node_run.status.value
        usage = node_run.usage
        if usage.total_tokens:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        status: tuple[str, str | None] = ("UNSET", None)
        events = []
        if node_run.status in (Status.FAILED, Status.CANCELED):
            error = node_run.error or {}
            status = (
                "ERROR",
                f"{error.get('code')}: {error.get('message')}" if error else node_run.status.value,
            )
            if node_run.exception is not None:
                events.append(("exception", end, exception_event(node_run.exception)))
        elif content:
            if node_run.inputs is not None:
                attributes["flowport.inputs"] = tracing.content(node_run.inputs)
            if node_run.output is not None:
                attributes["flowport.output"] = tracing.content(node_run.output)
        ids = (line.trace_id, span_id or new_id(), line.span_id)
        found.append(Span.finished(node_run.node, ids, (start, end), attributes, status, events))
    return found


def node_attributes(name: str, node_type: str, tool: str, variant: str | None) -> dict[str, Any]:
    """A node span's fixed attributes, computed once per node at load."""
    attrs: dict[str, Any] = {LINE_KIND: "node", "flowport.node": name, "flowport.node.type": node_type}
    if tool:
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = tool
    if variant:
        attrs["flowport.variant"] = variant
    return attrs
