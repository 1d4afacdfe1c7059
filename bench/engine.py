"""Flow engine benchmark: flowport against prompt flow 1.18.5, in the same run.

(a) The 3-node Python flow (``tests/flows/three_node_python``), no I/O: lines per second of
flowport's engine in this process (lines kept in flight by asyncio) against prompt flow's own
``FlowExecutor`` in its venv, sequential ``exec_line`` and ``exec_line_async`` with as many in
flight. Target: flowport at least 20x prompt flow's best mode.

(b) The chat flow (``src/flowport/examples/chat_basic``) against the test LLM server (its own
process) answering after 200 ms, 64 lines in flight: lines per second and p50/p99 line
latency, flowport against prompt flow's ``exec_line_async`` and a pool of 64 threads calling
``exec_line``. Target: flowport's p50 close to the LLM latency (at most 1.25x of it).

Engine load and a warm-up of 64 lines are left out of the timings. Prompt flow runs with
``PF_LOGGING_LEVEL=WARNING`` so its per-node INFO logs do not count against it. Each
measurement runs ``--repeat`` times (default 3), interleaved with the others so machine noise
hits every engine alike; the run with the median lines per second is reported.

    .venv/bin/python bench/engine.py            # default sizes, about 3 minutes on 2 cores
    .venv/bin/python bench/engine.py --quick    # small sizes, one run each, a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import itertools
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    API_KEY,
    CHAT_FLOW,
    CONNECTION_NAME,
    PYTHON_FLOW,
    Measurement,
    chat_inputs,
    chat_output_ok,
    llm_server_process,
    machine,
    median_run,
    print_table,
    python_inputs,
    python_output_ok,
    verdict,
    write_results,
)
from _promptflow import PF_VERSION, ensure_venv, run_script

from flowport.connections import Connection, OpenAIConnection
from flowport.engine import FlowExecutor

PF_WORKER = Path(__file__).resolve().parent / "_pf_engine.py"
PYTHON_TARGET = 20.0
P50_TARGET = 1.25
"""flowport's chat p50 should be at most this many times the LLM latency."""

Inputs = Callable[[int], dict[str, Any]]
Check = Callable[[dict[str, Any], dict[str, Any]], bool]


@dataclass(frozen=True)
class Sizes:
    python_lines: int
    pf_python_lines: int
    chat_lines: int
    python_concurrency: int = 32
    chat_concurrency: int = 64
    latency_ms: float = 200.0
    warmup: int = 64


DEFAULT = Sizes(python_lines=20_000, pf_python_lines=3_000, chat_lines=1_280)
QUICK = Sizes(python_lines=2_000, pf_python_lines=300, chat_lines=128)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- flowport, in this process ------------------------------------------------------


async def drive(
    executor: FlowExecutor, make_inputs: Inputs, check: Check, start: int, lines: int, concurrency: int
) -> tuple[float, list[float], int]:
    """Run ``lines`` lines, ``concurrency`` in flight; return seconds, latencies, failures."""
    rows = [make_inputs(start + i) for i in range(lines)]
    latencies: list[float] = []
    failed = 0

    async def worker(numbered: itertools.count[int]) -> None:
        nonlocal failed
        for index in numbered:
            if index >= lines:
                return
            started = time.perf_counter()
            result = await executor.run_line(rows[index], line_number=index)
            latencies.append(time.perf_counter() - started)
            if not (result.ok and check(rows[index], result.outputs)):
                failed += 1

    began = time.perf_counter()
    numbered = itertools.count()
    await asyncio.gather(*(worker(numbered) for _ in range(concurrency)))
    return time.perf_counter() - began, latencies, failed


def run_flowport(
    flow: Path,
    workload: str,
    lines: int,
    concurrency: int,
    warmup: int,
    connections: Mapping[str, Connection] | None = None,
) -> Measurement:
    make_inputs, check = (
        (python_inputs, python_output_ok) if workload == "python" else (chat_inputs, chat_output_ok)
    )
    executor = FlowExecutor.load(flow, connections=connections)

    async def both() -> tuple[float, list[float], int]:
        await drive(executor, make_inputs, check, lines, warmup, concurrency)
        return await drive(executor, make_inputs, check, 0, lines, concurrency)

    try:
        seconds, latencies, failed = asyncio.run(both())
    finally:
        executor.close()
    return Measurement("flowport", workload, f"run_line x{concurrency}", lines, seconds, failed, latencies)


# -- prompt flow, in its venv -----------------------------------------------------------


def run_pf(
    workload: str, mode: str, lines: int, concurrency: int, warmup: int, home: Path, base_url: str = ""
) -> Measurement:
    flow = PYTHON_FLOW if workload == "python" else CHAT_FLOW
    args = ["--workload", workload, "--flow", str(flow), "--mode", mode, "--lines", str(lines)]
    args += ["--concurrency", str(concurrency), "--warmup", str(warmup)]
    if base_url:
        args += ["--base-url", base_url]
    result = run_script(PF_WORKER, args, home, extra_env={"PF_LOGGING_LEVEL": "WARNING"})
    if result["first_error"]:
        log(f"prompt flow {workload}/{mode}: {result['failed']} failed, first: {result['first_error'][:300]}")
    labels = {"sequential": "exec_line x1", "async": f"exec_line_async x{concurrency}"}
    label = labels.get(mode, f"exec_line threads x{concurrency}")
    return Measurement(
        f"promptflow {PF_VERSION}",
        workload,
        label,
        lines,
        result["seconds"],
        result["failed"],
        result["latencies"],
    )


# -- the two benchmarks -------------------------------------------------------------------


Job = tuple[str, Callable[[], Measurement]]


def repeated(jobs: list[Job], repeat: int) -> list[Measurement]:
    """Run every job ``repeat`` times, interleaved so noise hits all alike; keep each median run."""
    runs: list[list[Measurement]] = [[] for _ in jobs]
    for round_ in range(1, repeat + 1):
        for (label, job), done in zip(jobs, runs, strict=True):
            log(f"{label} (run {round_}/{repeat})")
            done.append(job())
    return [median_run(done) for done in runs]


def python_flow(sizes: Sizes, home: Path, repeat: int) -> list[Measurement]:
    c, n, pf_n, w = sizes.python_concurrency, sizes.python_lines, sizes.pf_python_lines, sizes.warmup
    jobs: list[Job] = [
        (
            f"python flow: flowport, {n} lines, {c} in flight",
            lambda: run_flowport(PYTHON_FLOW, "python", n, c, w),
        ),
        (
            f"python flow: prompt flow exec_line, {pf_n} lines",
            lambda: run_pf("python", "sequential", pf_n, 1, w, home),
        ),
        (
            f"python flow: prompt flow exec_line_async, {pf_n} lines, {c} in flight",
            lambda: run_pf("python", "async", pf_n, c, w, home),
        ),
    ]
    return repeated(jobs, repeat)


def chat_flow(sizes: Sizes, home: Path, repeat: int) -> list[Measurement]:
    c, n, w = sizes.chat_concurrency, sizes.chat_lines, sizes.warmup
    with llm_server_process(sizes.latency_ms) as base_url:
        connections = {
            CONNECTION_NAME: OpenAIConnection(name=CONNECTION_NAME, api_key=API_KEY, base_url=base_url)
        }
        jobs: list[Job] = [
            (
                f"chat flow: flowport, {n} lines, {c} in flight, LLM at {sizes.latency_ms:g} ms",
                lambda: run_flowport(CHAT_FLOW, "chat", n, c, w, connections),
            ),
            (
                f"chat flow: prompt flow exec_line_async, {n} lines, {c} in flight",
                lambda: run_pf("chat", "async", n, c, w, home, base_url),
            ),
            (
                f"chat flow: prompt flow exec_line in {c} threads, {n} lines",
                lambda: run_pf("chat", "threads", n, c, w, home, base_url),
            ),
        ]
        return repeated(jobs, repeat)


def ratios(python_rows: list[Measurement], chat_rows: list[Measurement], sizes: Sizes) -> dict[str, Any]:
    """Print flowport against prompt flow's best mode for each flow; return the figures."""
    out: dict[str, Any] = {}
    if python_rows:
        fp, best = python_rows[0], max(python_rows[1:], key=lambda m: m.rate)
        ratio = fp.rate / best.rate
        out["python"] = {"lines_per_s_ratio": ratio, "pf_mode": best.mode, "target": PYTHON_TARGET}
        print(
            f"python flow  lines/s  flowport {fp.rate:,.0f} / prompt flow {best.rate:,.0f} ({best.mode})"
            f" = {ratio:.1f}x   target >= {PYTHON_TARGET:g}x: {verdict(ratio >= PYTHON_TARGET)}"
        )
    if chat_rows:
        fp, best = chat_rows[0], max(chat_rows[1:], key=lambda m: m.rate)
        ratio = fp.rate / best.rate
        bound = sizes.latency_ms * P50_TARGET
        ideal = sizes.chat_concurrency / (sizes.latency_ms / 1000)
        out["chat"] = {
            "lines_per_s_ratio": ratio,
            "p50_ratio_pf_over_flowport": best.p50_ms / fp.p50_ms,
            "pf_mode": best.mode,
            "flowport_p50_ms": fp.p50_ms,
            "p50_target_ms": bound,
            "ideal_lines_per_s": ideal,
        }
        print(
            f"chat flow    lines/s  flowport {fp.rate:,.0f} / prompt flow {best.rate:,.0f} ({best.mode})"
            f" = {ratio:.2f}x   (LLM-bound ideal: {ideal:,.0f} lines/s)"
        )
        print(
            f"chat flow    p50      flowport {fp.p50_ms:.0f} ms, prompt flow {best.p50_ms:.0f} ms,"
            f" LLM latency {sizes.latency_ms:g} ms   target flowport p50 <= {bound:g} ms:"
            f" {verdict(fp.p50_ms <= bound)}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    parser.add_argument("--only", choices=("python", "chat"), help="run one of the two benchmarks")
    parser.add_argument("--python-lines", type=int, help="flowport lines on the Python flow")
    parser.add_argument("--pf-python-lines", type=int, help="prompt flow lines on the Python flow")
    parser.add_argument("--chat-lines", type=int, help="lines on the chat flow (each engine)")
    parser.add_argument(
        "--repeat", type=int, help="runs of each measurement, median kept (default 3, quick 1)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    overrides = {
        "python_lines": args.python_lines,
        "pf_python_lines": args.pf_python_lines,
        "chat_lines": args.chat_lines,
    }
    sizes = Sizes(**(asdict(sizes) | {k: v for k, v in overrides.items() if v}))

    repeat = max(1, args.repeat or (1 if args.quick else 3))
    log(f"prompt flow venv: {ensure_venv().parent.parent}")
    with tempfile.TemporaryDirectory(prefix="flowport-bench-") as scratch:
        home = Path(scratch) / "pf-home"
        python_rows = python_flow(sizes, home, repeat) if args.only != "chat" else []
        chat_rows = chat_flow(sizes, home, repeat) if args.only != "python" else []

    print()
    print_table(python_rows + chat_rows)
    print()
    figures = ratios(python_rows, chat_rows, sizes)
    payload = {
        "benchmark": "engine",
        "machine": machine(),
        "versions": {"flowport": importlib.metadata.version("flowport"), "promptflow": PF_VERSION},
        "sizes": asdict(sizes),
        "repeat": repeat,
        "rows": [m.summary() for m in python_rows + chat_rows],
        "ratios": figures,
    }
    print(f"\nresults: {write_results('engine', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
