"""``flowport trace list|show``: the server's built-in trace store, and the tree a trace prints as."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from flowport.cli.api_client import ApiClient
from flowport.cli.common import fail
from flowport.cli.output import OUTPUT_HELP, Output, emit

app = typer.Typer(help="Traces of requests: nodes, LLM calls, tokens and time.", no_args_is_help=True)

TRACE_COLUMNS = [
    "start_time", "trace_id", "request_id", "endpoint", "deployment", "status", "duration_ms", "tokens",
]  # fmt: skip
TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
TableOption = typer.Option(Output.table, "--output", "-o", help=OUTPUT_HELP, case_sensitive=False)
FileOption = typer.Option(
    None, "--file", help="Read a local trace file (flow test --trace, run create --trace), not the server."
)
LOCAL_COLUMNS = ["start_time", "trace_id", "line_number", "status", "duration_ms", "tokens"]


def _local(path: Path, read: Any) -> Any:
    """``read(store)`` over a local trace file, every trace in it kept; a missing one is one line."""
    from flowport.control.errors import ApiError
    from flowport.control.traces import TraceStore

    if not path.exists():
        fail(f"{path} does not exist (flow test --trace and run create --trace print where they keep traces)")
    try:
        return read(TraceStore(path, max_traces=1_000_000, max_age=100 * 365 * 86400))
    except ApiError as exc:
        fail(exc.message)


@app.command("list")
def list_traces(
    endpoint: str = typer.Option(None, "--endpoint", "-e", help="Only this endpoint's requests."),
    deployment: str = typer.Option(None, "--deployment", "-d", help="Only this deployment's requests."),
    request_id: str = typer.Option(None, "--request-id", "-r", help="The request's x-request-id."),
    since: str = typer.Option(None, "--since", help="From this ISO time on, e.g. 2026-11-21T14:00:00Z."),
    until: str = typer.Option(None, "--until", help="Up to this ISO time."),
    status: str = typer.Option(None, "--status", help="Completed or Failed."),
    limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
    file: Path = FileOption,
    output: Output = TableOption,
) -> None:
    """Recent traces, newest first."""
    from flowport.control.traces import TraceQuery

    query = TraceQuery(endpoint, deployment, request_id, since, until, status, limit)
    if file is not None:
        emit(_local(file, lambda store: store.list(query)), output, LOCAL_COLUMNS)
        return
    params = {k: v for k, v in dataclasses.asdict(query).items() if v is not None}
    found = ApiClient.discover().call("GET", "/traces", params=params)["value"]
    if output is Output.table and not found:
        typer.echo("no traces (the built-in store keeps the last 24 hours' requests)")
        return
    emit(found, output, TRACE_COLUMNS)


@app.command("show")
def show_trace(
    trace: str = typer.Argument(..., help="A trace id (32 hex digits) or a request id."),
    file: Path = FileOption,
    output: Output = TableOption,
) -> None:
    """One trace as a tree of spans (-o json for every attribute)."""
    if file is not None:
        document = _local(file, lambda store: store.get(trace))
        typer.echo(render_tree(document)) if output is Output.table else emit(document, output)
        return
    client = ApiClient.discover()
    trace_id = trace
    if not TRACE_ID.match(trace):
        found = client.call("GET", "/traces", params={"request_id": trace, "limit": 1})["value"]
        if not found:
            fail(f"no trace for request id {trace!r} (list them: flowport trace list)")
        trace_id = found[0]["trace_id"]
    document = client.call("GET", f"/traces/{trace_id}")
    if output is Output.table:
        typer.echo(render_tree(document))
    else:
        emit(document, output)


def _tokens(attributes: dict[str, Any]) -> str:
    given = attributes.get("gen_ai.usage.input_tokens"), attributes.get("gen_ai.usage.output_tokens")
    return f"  tokens {given[0] or 0}+{given[1] or 0}" if any(v is not None for v in given) else ""


def render_tree(document: dict[str, Any]) -> str:
    """A trace as text: its summary line, then each span under its parent with time and status."""
    tokens = document.get("tokens") or {}
    lines = [
        f"trace {document['trace_id']}  {document.get('status')}  {document.get('duration_ms')} ms"
        f"  request {document.get('request_id') or '-'}  tokens {tokens.get('total', 0)}"
    ]
    spans = document["spans"]
    ids = {span["span_id"] for span in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span.get("parent_id") if span.get("parent_id") in ids else None
        children.setdefault(parent, []).append(span)

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            attributes = span.get("attributes") or {}
            status = "Failed" if span.get("status") == "ERROR" else "ok"
            line = (
                f"{'  ' * depth}{span['name']}  {span.get('duration_ms')} ms  {status}{_tokens(attributes)}"
            )
            if span.get("status") == "ERROR" and span.get("status_message"):
                line += f"  ({span['status_message']})"
            lines.append(line)
            walk(span["span_id"], depth + 1)

    walk(None, 1)
    return "\n".join(lines)


@contextlib.contextmanager
def local_trace(source: Any, show: bool = True) -> Iterator[None]:
    """Trace what runs inside (``flow test --trace``, ``run create --trace``): spans, with inputs and
    outputs, go to a new file under the flow's ``.promptflow/traces``; at the end each trace prints
    as a tree on stderr (``show``), or only where they are kept."""
    from flowport.control.traces import Trace, add_spans
    from flowport.tracing.setup import CONTENT_ENV, configure

    path = Path(str(source))
    folder = path if path.is_dir() else path.parent if path.exists() else Path.cwd()
    traces = folder / ".promptflow" / "traces"
    traces.mkdir(parents=True, exist_ok=True)
    target = traces / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.traces.jsonl"
    with open(target, "ab", buffering=0) as file:
        tracing = configure(
            "flowport-flow-test", {**os.environ, CONTENT_ENV: "true"}, builtin=file, force=True
        )
        try:
            yield
        finally:
            if tracing is not None:
                tracing.shutdown()
            found: dict[str, Trace] = {}
            add_spans(found, target.read_bytes().splitlines())
            if show:
                for trace in sorted(found.values(), key=lambda t: t.start):
                    typer.echo(render_tree(trace.document()), err=True)
            typer.echo(f"{len(found)} trace(s) kept in {target} (flowport trace list --file ...)", err=True)
