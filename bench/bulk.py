"""Bulk run benchmark: ``flowport run create`` against ``pf run create``, in the same run.

Both CLIs run the 3-node Python flow (``tests/flows/three_node_python``) over the same
generated JSONL (10,000 lines by default) with ``text=${data.text}``, each in its own scratch
state folder (``FLOWPORT_HOME``, prompt flow's ``HOME``). The time is the wall clock of the
whole command: process start, flow load, every line, and writing the run's results. Each CLI
first does one untimed 20-line run so one-time setup (creating its store) is left out. Every
output line is checked. Target: flowport at least 20x the lines per second of prompt flow.

    .venv/bin/python bench/bulk.py                 # 10,000 lines
    .venv/bin/python bench/bulk.py --lines 2000
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import FLOWPORT, PYTHON_FLOW, machine, python_inputs, python_output_ok, verdict, write_results
from _promptflow import PF_VERSION, ensure_venv, pf_env, venv_pf

TARGET = 20.0
WARMUP_LINES = 20
MAPPING = "text=${data.text}"


@dataclass
class BulkResult:
    tool: str
    lines: int
    seconds: float
    engine_seconds: float
    """The run's own duration as the tool reports it: lines only, no start-up."""
    failed: int
    note: str = ""
    rates: list[float] = field(default_factory=list)
    """Lines per second of every repeat."""

    @property
    def rate(self) -> float:
        return self.lines / self.seconds

    def summary(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"lines_per_s": self.rate}


Runner = Callable[[str, Path, list[dict[str, Any]]], BulkResult]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def write_data(path: Path, lines: int) -> list[dict[str, Any]]:
    rows = [python_inputs(i) for i in range(lines)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def timed(command: list[str], env: dict[str, str], logs: Path, name: str) -> tuple[float, str]:
    """Run a CLI; return its wall-clock seconds and stdout. stdout and stderr are kept in ``logs``."""
    out, err = logs / f"{name}.stdout", logs / f"{name}.stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        began = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=stdout, stderr=stderr, check=False)
        seconds = time.perf_counter() - began
    if done.returncode != 0:
        tail = "\n".join(err.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command[:3])} failed ({done.returncode}):\n{tail}")
    return seconds, out.read_text()


def failed_lines(outputs: Path, rows: list[dict[str, Any]]) -> int:
    """Lines missing from a run's outputs JSONL or holding a wrong result."""
    seen: dict[int, dict[str, Any]] = {}
    for line in outputs.read_text().splitlines():
        record = json.loads(line)
        seen[record["line_number"]] = record
    return sum(1 for i, row in enumerate(rows) if not python_output_ok(row, seen.get(i, {})))


def flowport_tool(scratch: Path, concurrency: int) -> Runner:
    """Returns a function running one named ``flowport run create`` over a data file."""
    home = scratch / "flowport-home"
    env = {**os.environ, "FLOWPORT_HOME": str(home)}

    def run(name: str, data: Path, rows: list[dict[str, Any]]) -> BulkResult:
        args = ["run", "create", "--flow", str(PYTHON_FLOW), "--data", str(data), "--column-mapping", MAPPING]
        command = [str(FLOWPORT), *args, "--name", name, "--concurrency", str(concurrency)]
        seconds, stdout = timed(command, env, scratch, f"flowport-{name}")
        failed = failed_lines(home / "runs" / name / "outputs.jsonl", rows)
        duration = float(json.loads(stdout)["duration"])
        return BulkResult("flowport", len(rows), seconds, duration, failed, f"--concurrency {concurrency}")

    return run


def pf_tool(scratch: Path) -> Runner:
    """Returns a function running one named ``pf run create`` over a data file."""
    home = scratch / "pf-home"
    env = pf_env(home)

    def run(name: str, data: Path, rows: list[dict[str, Any]]) -> BulkResult:
        args = ["run", "create", "--flow", str(PYTHON_FLOW), "--data", str(data), "--column-mapping", MAPPING]
        seconds, stdout = timed([str(venv_pf()), *args, "--name", name], env, scratch, f"pf-{name}")
        run_dir = home / ".promptflow" / ".runs" / name
        failed = failed_lines(run_dir / "flow_outputs" / "output.jsonl", rows)
        meta = json.loads(stdout[stdout.rindex("\n{") :])
        duration = float(meta["properties"]["system_metrics"]["duration"])
        processes = re.search(r"Set process count to (\d+)", (run_dir / "logs.txt").read_text())
        note = f"{processes.group(1)} worker processes" if processes else ""
        return BulkResult(f"promptflow {PF_VERSION}", len(rows), seconds, duration, failed, note)

    return run


def median(results: list[BulkResult]) -> BulkResult:
    """The run with the median lines per second (the upper one of an even count)."""
    ordered = sorted(results, key=lambda r: r.rate)
    chosen = ordered[len(ordered) // 2]
    chosen.rates = [r.rate for r in results]
    return chosen


def print_results(results: list[BulkResult]) -> None:
    header = ("tool", "lines", "wall s", "lines/s", "range", "run s", "failed", "note")
    cells = [
        (
            r.tool,
            str(r.lines),
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            f"{min(r.rates):,.0f}-{max(r.rates):,.0f}" if len(r.rates) > 1 else "-",
            f"{r.engine_seconds:.2f}",
            str(r.failed),
            r.note,
        )
        for r in results
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                c.rjust(w) if 1 <= i <= 6 else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=10_000, help="lines in the data file (default 10000)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="flowport --concurrency (its default: 16)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (data, run folders, logs)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each CLI, median kept (default 1)")
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)

    log(f"prompt flow venv: {ensure_venv().parent.parent}")
    scratch = Path(tempfile.mkdtemp(prefix="flowport-bulk-"))
    try:
        data, warmup = scratch / "data.jsonl", scratch / "warmup.jsonl"
        rows, warm_rows = write_data(data, args.lines), write_data(warmup, WARMUP_LINES)
        tools = {
            "flowport run create": flowport_tool(scratch, args.concurrency),
            "pf run create": pf_tool(scratch),
        }
        runs: dict[str, list[BulkResult]] = {label: [] for label in tools}
        for label, run in tools.items():
            log(f"{label}: warm-up, {WARMUP_LINES} lines")
            run("warmup", warmup, warm_rows)
        for round_ in range(1, repeat + 1):
            for label, run in tools.items():
                log(f"{label}: {args.lines} lines (run {round_}/{repeat})")
                runs[label].append(run(f"bench{round_}", data, rows))
        fp, pf = (median(done) for done in runs.values())
    finally:
        if args.keep:
            log(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    print()
    print_results([fp, pf])
    ratio = fp.rate / pf.rate
    print(
        f"\nbulk run  lines/s  flowport {fp.rate:,.0f} / prompt flow {pf.rate:,.0f} = {ratio:.1f}x"
        f"   target >= {TARGET:g}x: {verdict(ratio >= TARGET)}"
    )
    print(f"run only (as each tool reports it): {pf.engine_seconds / fp.engine_seconds:.1f}x")
    payload = {
        "benchmark": "bulk",
        "machine": machine(),
        "versions": {"flowport": importlib.metadata.version("flowport"), "promptflow": PF_VERSION},
        "lines": args.lines,
        "repeat": repeat,
        "rows": [fp.summary(), pf.summary()],
        "ratio": ratio,
        "ratio_run_only": pf.engine_seconds / fp.engine_seconds,
        "target": TARGET,
    }
    print(f"\nresults: {write_results('bulk', payload)}")
    return 0 if fp.failed == pf.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
