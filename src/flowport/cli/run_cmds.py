"""``flowport run``: bulk runs of a flow over a JSONL file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flowport.cli.common import (
    connection_resolver,
    fail,
    flow_source,
    guarded,
    parse_pairs,
    print_json,
)
from flowport.cli.trace_cmds import local_trace
from flowport.engine import LineResult, load_executor, parse_init
from flowport.engine.bulk import BulkRunner, load_run_lines, read_jsonl
from flowport.settings import runs_dir

app = typer.Typer(help="Bulk runs: a flow over every line of a JSONL file.", no_args_is_help=True)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _run_dir(name: str) -> Path:
    if not _NAME.match(name):
        fail(f"run name {name!r} may hold only letters, digits, '_', '-' and '.'")
    return runs_dir() / name


def _existing_run(name: str) -> Path:
    path = _run_dir(name)
    if not (path / "meta.json").is_file():
        fail(f"run {name!r} does not exist (see 'flowport run list')")
    return path


@app.command("create")
@guarded
def create(
    flow: Path = typer.Option(..., "--flow", help="The flow folder."),
    data: Path = typer.Option(..., "--data", help="A JSONL file, one line of inputs per row."),
    column_mapping: list[str] | None = typer.Option(
        None, "--column-mapping", help="input=${data.column} or input=${run.outputs.x} (repeatable)."
    ),
    run: str | None = typer.Option(None, "--run", help="A previous run whose outputs feed ${run.outputs.x}."),
    name: str | None = typer.Option(None, "--name", help="Name of this run (default: generated)."),
    variant: str | None = typer.Option(None, "--variant", help="Variant to use, as '${node.variant_1}'."),
    concurrency: int = typer.Option(16, "--concurrency", min=1, help="Lines in flight at once."),
    init: list[str] | None = typer.Option(None, "--init", help="A flex flow class's __init__ arguments."),
    trace: bool = typer.Option(
        False, "--trace", help="Trace every line; the spans are kept under the flow's .promptflow/traces."
    ),
) -> None:
    """Run the flow over every line, then its aggregation nodes; print the run summary."""
    with local_trace(flow_source(flow), show=False) if trace else contextlib.nullcontext():
        _create(flow, data, column_mapping, run, name, variant, concurrency, init)


def _create(
    flow: Path,
    data: Path,
    column_mapping: list[str] | None,
    run: str | None,
    name: str | None,
    variant: str | None,
    concurrency: int,
    init: list[str] | None,
) -> None:
    data = data.resolve()
    rows = read_jsonl(data)
    base_lines = load_run_lines(_existing_run(run)) if run else None
    executor = load_executor(
        flow_source(flow), variant=variant, init=parse_init(init), connections=connection_resolver()
    )
    mapping = parse_pairs(column_mapping or [], "--column-mapping")
    run_name = name or f"{executor.flow.name}_{_stamp()}"
    target = _run_dir(run_name)
    if target.exists():
        fail(f"run {run_name!r} already exists; choose another --name")
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed: {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    )
    task = progress.add_task(run_name, total=len(rows), failed=0)
    failed = 0

    def on_line(result: LineResult) -> None:
        nonlocal failed
        failed += 0 if result.ok else 1
        progress.update(task, advance=1, failed=failed)

    runner = BulkRunner(executor, concurrency=concurrency, on_line=on_line)
    try:
        with progress:
            summary = asyncio.run(
                runner.run(
                    rows,
                    target,
                    name=run_name,
                    flow=str(executor.flow.path),
                    data=str(data),
                    column_mapping=mapping,
                    base_lines=base_lines,
                    base_run=run,
                )
            )
    finally:
        executor.close()
    print_json(summary.to_dict())


def _stamp() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f")


@app.command("show")
@guarded
def show(name: str = typer.Option(..., "--name", "-n")) -> None:
    """Show a run's summary."""
    print_json(json.loads((_existing_run(name) / "meta.json").read_text()))


@app.command("show-metrics")
@guarded
def show_metrics(name: str = typer.Option(..., "--name", "-n")) -> None:
    """Print the metrics logged by the run's aggregation nodes."""
    print_json(json.loads((_existing_run(name) / "metrics.json").read_text()))


@app.command("show-details")
@guarded
def show_details(
    name: str = typer.Option(..., "--name", "-n"),
    max_results: int = typer.Option(100, "--max-results", "-r", min=1),
    output: str = typer.Option("table", "--output", "-o", help="table or json"),
) -> None:
    """Inputs, outputs and status of each line."""
    rows: list[dict[str, Any]] = []
    for line in load_run_lines(_existing_run(name))[:max_results]:
        if not line:
            continue
        rows.append(
            {
                "line_number": line["line_number"],
                "status": line["status"],
                "inputs": line["inputs"],
                "outputs": line["outputs"],
                "error": (line.get("error") or {}).get("message"),
            }
        )
    if output == "json":
        print_json(rows)
        return
    table = Table(show_lines=False)
    for column in ("line", "status", "inputs", "outputs", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["line_number"]),
            row["status"],
            json.dumps(row["inputs"], ensure_ascii=False),
            json.dumps(row["outputs"], ensure_ascii=False),
            row["error"] or "",
        )
    Console().print(table)


@app.command("list")
@guarded
def list_() -> None:
    """List runs, newest first."""
    folder = runs_dir()
    metas = []
    for meta in folder.glob("*/meta.json") if folder.is_dir() else []:
        data = json.loads(meta.read_text())
        metas.append({k: data.get(k) for k in ("name", "status", "created", "total", "completed", "failed")})
    print_json(sorted(metas, key=lambda m: m.get("created") or "", reverse=True))
