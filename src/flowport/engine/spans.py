"""The engine's spans: one per line, made on the request path; one per node run, made later.

A line is a light span (``tracing.spans.Span``) made current while it runs. A node only gets a
span id (its LLM calls' spans name it as their parent); its span is built in the export thread
from its ``NodeRun`` record (times, status, error, tokens, inputs and outputs), which the engine
keeps anyway. So tracing adds two small objects per line and one id per node to the request
path. The line's span ends with the line, or with its last stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowport import tracing
from flowport.engine.records import LineRun, NodeRun, Status
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


def start_line(name: str, run: LineRun, attributes: Mapping[str, Any] | None = None) -> Any:
    """The line's span, made current (its nodes are its children): the context token, or None.

    The span is named after the flow (``flowport.flow`` in ``attributes`` wins over ``name``)."""
    if STATE.sink is None:
        return None
    attrs: dict[str, Any] = {LINE_KIND: "flow", "flowport.flow": name, "flowport.run_id": run.run_id}
    if attributes:
        attrs.update(attributes)
    if run.line_number is not None:
        attrs["flowport.line_number"] = run.line_number
    parent = CURRENT.get()
    if parent is None:
        span = Span(attrs["flowport.flow"], new_trace_id(), None, INTERNAL, attrs)
    else:
        span = Span(attrs["flowport.flow"], parent.trace_id, parent.span_id, INTERNAL, attrs)
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


def _close_line(run: LineRun, outputs: Mapping[str, Any] | None = None) -> None:
    span = run.span
    if span is None:
        return
    run.span = None
    usage = run.usage
    if usage.total_tokens:
        span.attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        span.attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if run.error is not None:
        tracing.fail(span, None, f"{run.error.get('code')}: {run.error.get('message')}")
    elif STATE.content and outputs is not None:
        span.attributes["flowport.outputs"] = tracing.content(outputs)
    span.end()


def cancel_line(run: LineRun, token: Any, node_attributes: Any) -> None:
    """The line was cancelled (its request timed out or went away): close its span."""
    tracing.deactivate(token)
    span = run.span
    if span is not None:
        run.span = None
        span.expand = lambda: node_spans(span, run, node_attributes, False)
        tracing.fail(span, None, "the line was cancelled")
        span.end()


def start_node(node_run: NodeRun, line: Parent | None) -> Any:
    """Give the node its span id and make it current (its LLM calls' parent): the token, or None."""
    if line is None:
        return None
    node_run.span_id = new_id()
    return tracing.activate(Parent(line.trace_id, node_run.span_id))


def node_failed(node_run: NodeRun, exc: BaseException | None) -> None:
    """Keep what a failed node raised, for its span's ``exception`` event."""
    if node_run.span_id is not None and exc is not None:
        node_run.exception = exc


def _ns(seconds: float | None, default: int) -> int:
    """A record's clock reading (to the microsecond) in nanoseconds, or ``default``."""
    return round(seconds * 1e6) * 1000 if seconds is not None else default


def node_spans(line: Span, run: LineRun, node_attributes: Any, content: bool) -> list[Span]:
    """The spans of a line's node runs, built from their records (in the export thread);
    ``content``: with their inputs and outputs."""
    found = []
    for node_run in list(run.node_runs.values()):
        span_id = node_run.span_id
        if span_id is None and node_run.status is not Status.BYPASSED:
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
