"""The engine's spans: one per line and one per node run, ended as their records close.

A node's span lives on its ``NodeRun`` (``span``) and ends wherever the record gets its final
status (done, failed, cancelled, or its stream drained); the line's ends with the line, or
with its last stream. Nothing here runs when tracing is off (``start`` gives None).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flowport import tracing
from flowport.engine.records import LineRun, NodeRun, Status
from flowport.tracing.propagation import traceparent

LINE_KIND = "flowport.span_type"


def start_line(name: str, run: LineRun, attributes: Mapping[str, Any] | None = None) -> Any:
    """The line's span, made current (its nodes are its children): the context token, or None.

    The span is named after the flow (``flowport.flow`` in ``attributes`` wins over ``name``)."""
    if not tracing.enabled():
        return None
    attrs: dict[str, Any] = {
        LINE_KIND: "flow",
        "flowport.flow": name,
        "flowport.run_id": run.run_id,
        **(attributes or {}),
    }
    name = attrs["flowport.flow"]
    if run.line_number is not None:
        attrs["flowport.line_number"] = run.line_number
    span = tracing.start(name, attrs)
    if span is None:
        return None
    if tracing.capture_content():
        span.set_attribute("flowport.inputs", tracing.content(run.inputs))
    run.span = span
    run.traceparent = traceparent(span)
    return tracing.activate(span)


def end_line(run: LineRun, token: Any, outputs: Mapping[str, Any] | None = None) -> None:
    """Close the line's span (after its streams, if ``outputs`` hold some) and restore the context."""
    tracing.deactivate(token)
    span = run.span
    if span is None:
        return
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
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    if run.error is not None:
        tracing.fail(span, None, f"{run.error.get('code')}: {run.error.get('message')}")
    elif tracing.capture_content() and outputs is not None:
        span.set_attribute("flowport.outputs", tracing.content(outputs))
    span.end()


def start_node(node_run: NodeRun, attributes: Mapping[str, Any], inputs: Any = None) -> Any:
    """The node's span (on ``node_run.span``), made current: the context token, or None."""
    span = tracing.start(node_run.node, dict(attributes))
    if span is None:
        return None
    node_run.span = span
    if tracing.capture_content() and inputs is not None:
        span.set_attribute("flowport.inputs", tracing.content(inputs))
    return tracing.activate(span)


def end_node(node_run: NodeRun, exc: BaseException | None = None, output: Any = None) -> None:
    """Close the node's span with the record's status (safe to call more than once)."""
    span = node_run.span
    if span is None:
        return
    node_run.span = None
    usage = node_run.usage
    if usage.total_tokens:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    span.set_attribute("flowport.status", node_run.status.value)
    if node_run.status is Status.FAILED or node_run.status is Status.CANCELED:
        error = node_run.error or {}
        message = f"{error.get('code')}: {error.get('message')}" if error else node_run.status.value
        tracing.fail(span, exc, message)
    elif tracing.capture_content():
        output = output if output is not None else node_run.output
        if output is not None:
            span.set_attribute("flowport.output", tracing.content(output))
    span.end()


def end_nodes(node_runs: Iterable[NodeRun]) -> None:
    for node_run in node_runs:
        end_node(node_run)


def node_attributes(name: str, node_type: str, tool: str, variant: str | None) -> dict[str, Any]:
    """A node span's fixed attributes, computed once per node at load."""
    attrs: dict[str, Any] = {LINE_KIND: "node", "flowport.node": name, "flowport.node.type": node_type}
    if tool:
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = tool
    if variant:
        attrs["flowport.variant"] = variant
    return attrs


def cancel_line(run: LineRun, token: Any) -> None:
    """The line was cancelled (its request timed out or went away): close its open spans."""
    for node_run in run.node_runs.values():
        if node_run.span is not None:
            node_run.status = Status.CANCELED if node_run.status is Status.RUNNING else node_run.status
            end_node(node_run)
    tracing.deactivate(token)
    span = run.span
    if span is not None:
        run.span = None
        tracing.fail(span, None, "the line was cancelled")
        span.end()
