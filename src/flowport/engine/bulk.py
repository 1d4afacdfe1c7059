"""Bulk runs: a flow over every line of a JSONL file, with column mapping and aggregation.

Lines run concurrently (bounded); a failing line is recorded and the run goes on.
Results are written under the run folder: ``outputs.jsonl`` (one object per completed
line, with ``line_number``), ``details.jsonl`` (inputs, outputs, status, error, node
runs per line), ``metrics.json`` and ``meta.json``; output images as files beside them
(``{"data:image/png;path": "<uuid>.png"}`` in the outputs, as prompt flow writes them).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowport.engine.errors import user_error
from flowport.engine.executor import FlowExecutor, LineResult
from flowport.engine.streams import join_async
from flowport.tools.multimedia import data_file_paths, has_media_dict, persist_images

_MAPPING_REF = re.compile(r"^\$\{(data|run\.outputs|run\.inputs)\.([^}]+)\}$")


@dataclass
class RunSummary:
    name: str
    flow: str
    data: str
    status: str
    total: int
    completed: int
    failed: int
    metrics: dict[str, float]
    created: str
    duration: float
    run_dir: str
    base_run: str | None = None
    column_mapping: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line is an error naming its number. Image files named by
    ``{"data:image/png;path": ...}`` are relative to the file's folder, as in prompt flow."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise user_error(f"cannot read data file {path}: {exc}", "DataNotFound") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise user_error(f"{path}:{number}: not valid JSON: {exc}", "InvalidData") from None
        if not isinstance(row, dict):
            raise user_error(f"{path}:{number}: each line must be a JSON object", "InvalidData")
        rows.append(data_file_paths(row, path.parent) if has_media_dict(row) else row)
    return rows


def parse_column_mapping(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise user_error(f"column mapping expects input=${{data.column}}, got {item!r}", "InvalidMapping")
        mapping[key.strip()] = value.strip()
    return mapping


def map_line(
    mapping: Mapping[str, str],
    row: dict[str, Any],
    base: dict[str, Any] | None,
    required_inputs: list[str],
) -> dict[str, Any]:
    """The flow inputs of one line, as prompt flow maps them.

    Mapped inputs take their column (left out when the line lacks it, so the default
    applies); an unmapped input *without* a default reads the data column of its name;
    an unmapped input with a default keeps the default.
    """
    sources = {
        "data": row,
        "run.outputs": (base or {}).get("outputs", {}),
        "run.inputs": (base or {}).get("inputs", {}),
    }
    inputs: dict[str, Any] = {}
    for name, ref in mapping.items():
        match = _MAPPING_REF.match(ref)
        if not match:
            inputs[name] = ref
            continue
        source = sources[match.group(1)]
        if match.group(2) in source:
            inputs[name] = source[match.group(2)]
    for name in required_inputs:
        if name not in mapping and name in row:
            inputs[name] = row[name]
    return inputs


def _failed_lines_error(results: list[LineResult]) -> dict[str, Any] | None:
    """The run's error when lines failed (the run itself still completes), as prompt flow says it."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return None
    first = failed[0].error
    return {
        "code": "UserError",
        "message": f"Failed to run {len(failed)}/{len(results)} lines. "
        f"First error message is: {first.message if first else ''}",
        "innerError": {"code": "BulkRunException", "innerError": None},
    }


def _json_default(value: Any) -> Any:
    return str(value)


class BulkRunner:
    """Runs one bulk run and writes its folder."""

    def __init__(
        self,
        executor: FlowExecutor,
        *,
        concurrency: int = 16,
        on_line: Callable[[LineResult], None] | None = None,
    ) -> None:
        self.executor = executor
        self.concurrency = max(1, concurrency)
        self.on_line = on_line

    async def run(
        self,
        rows: list[dict[str, Any]],
        run_dir: Path,
        *,
        name: str | None = None,
        flow: str = "",
        data: str = "",
        column_mapping: Mapping[str, str] | None = None,
        base_lines: list[dict[str, Any]] | None = None,
        base_run: str | None = None,
    ) -> RunSummary:
        name = name or f"run_{datetime.now(UTC):%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}"
        mapping = dict(column_mapping or {})
        started = datetime.now(UTC)
        required = [name for name, spec in self.executor.flow.inputs.items() if spec.required]
        results: list[LineResult | None] = [None] * len(rows)
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(index: int) -> None:
            base = base_lines[index] if base_lines and index < len(base_lines) else None
            inputs = map_line(mapping, rows[index], base, required)
            async with semaphore:
                result = await self.executor.run_line(inputs, line_number=index, run_id=f"{name}_{index}")
            results[index] = result
            if self.on_line:
                self.on_line(result)

        await asyncio.gather(*(one(i) for i in range(len(rows))))
        done = [r for r in results if r is not None]
        completed = [r for r in done if r.ok]
        metrics, agg_runs, agg_error = {}, {}, None
        if self.executor.aggregation_nodes and completed:
            pairs = [(r.inputs, r.node_outputs) for r in completed]
            metrics, agg_runs, agg_error = await self.executor.run_aggregation(pairs)
        summary = RunSummary(
            name=name,
            flow=flow,
            data=data,
            status="Failed" if agg_error else "Completed",
            total=len(rows),
            completed=len(completed),
            failed=len(done) - len(completed),
            metrics=metrics,
            created=started.isoformat(),
            duration=(datetime.now(UTC) - started).total_seconds(),
            run_dir=str(run_dir),
            base_run=base_run,
            column_mapping=mapping,
            error=agg_error.to_dict() if agg_error else _failed_lines_error(done),
        )
        await write_run(run_dir, summary, done, agg_runs)
        return summary


async def write_run(
    run_dir: Path, summary: RunSummary, results: list[LineResult], agg_runs: dict[str, Any]
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (
        (run_dir / "outputs.jsonl").open("w", encoding="utf-8") as out,
        (run_dir / "details.jsonl").open("w", encoding="utf-8") as details,
    ):
        for result in results:
            outputs = {k: await join_async(v) for k, v in result.outputs.items()}
            outputs = persist_images(outputs, run_dir, relative_to=run_dir)  # <uuid>.png beside
            if result.ok:
                out.write(
                    json.dumps({"line_number": result.run.line_number, **outputs}, default=_json_default)
                    + "\n"
                )
            record = result.run.to_dict()
            record["outputs"] = outputs
            details.write(json.dumps(record, default=_json_default) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(summary.metrics, indent=2))
    meta = summary.to_dict()
    meta["aggregation"] = {name: run.to_dict() for name, run in agg_runs.items()}
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))


def load_run_lines(run_dir: Path) -> list[dict[str, Any]]:
    """A finished run's lines as {inputs, outputs}, ordered by line number (for --run)."""
    path = run_dir / "details.jsonl"
    if not path.is_file():
        raise user_error(f"run folder {run_dir} has no details.jsonl: is it a flowport run?", "RunNotFound")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_number = {line["line_number"]: line for line in lines}
    return [by_number.get(i, {}) for i in range(max(by_number, default=-1) + 1)]
