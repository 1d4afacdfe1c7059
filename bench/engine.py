"""Flow engine benchmark: flowport against prompt flow 1.18.5, in the same run.

(a) The 3-node Python flow (``tests/flows/three_node_python``), no I/O: lines per second of
flowport's engine in this process (lines kept in flight by asyncio) against prompt flow's own
``FlowExecutor`` in its venv, sequential ``exec_line`` and ``exec_line_async`` with as many in
flight. Target: flowport at least 20x prompt flow's best mode.

(b) The chat flow (``src/flowport/examples/chat_basic``) against the test LLM server (its own
process) answering after 200 ms, 64 lines in flight: lines per second and p50/p99 line
latency, flowport against prompt flow's ``exec_line_async`` and a pool of 64 threads calling
``exec_line``. Target: flowport's p50 close to the LLM latency (at most 1.25x of it).

(c) A Python-only flex flow (``bench/flows/flex_text``: a function entry doing a little text
processing), no I/O: lines per second of flowport's flex executor (lines kept in flight by
asyncio) against prompt flow's ``FlowExecutor.create`` for the flex YAML (its ``ScriptExecutor``),
sequential ``exec_line`` and ``exec_line_async`` with as many in flight. Target: flowport at
least 10x prompt flow's best mode. The function alone (called directly, no engine) is timed too:
what each engine adds per line is its time per line less the function's.

(d) A prompty (``bench/flows/prompty_echo/chat.prompty``, model configured from the environment)
against the test LLM server answering after 100 ms: p50/p99 line latency against the LLM's,
one line at a time and 16 in flight, flowport's prompty executor against prompt flow's
``PromptyExecutor`` (``exec_line``, in as many threads; it has no async path). Target:
flowport's p50 within 15% of the LLM latency.

Engine load and a warm-up of 64 lines (10 for a prompty one at a time) are left out of the
timings; each line's outputs are checked. Every row also gives
lines per CPU second of the engine's process (all its threads), which moves less than the wall
clock when other work shares the machine. Prompt flow runs with
``PF_LOGGING_LEVEL=WARNING`` so its per-node INFO logs do not count against it. Each
measurement runs ``--repeat`` times (default 3), interleaved with the others so machine noise
hits every engine alike; the run with the median lines per second is reported.

    .venv/bin/python bench/engine.py            # default sizes, about 8 minutes on 2 cores
    .venv/bin/python bench/engine.py --quick    # small sizes, one run each, a smoke test
    .venv/bin/python bench/engine.py --only flex --only prompty   # the flex and prompty cases
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import itertools
import os
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
    FLEX_FLOW,
    PROMPTY_FLOW,
    PROMPTY_KEY_ENV,
    PROMPTY_URL_ENV,
    PYTHON_FLOW,
    WORKLOADS,
    Measurement,
    llm_server_process,
    machine,
    median_run,
    print_table,
    verdict,
    write_results,
)
from _promptflow import PF_VERSION, ensure_venv, run_script

from flowport.connections import Connection, OpenAIConnection
from flowport.engine import FlexExecutor, FlowExecutor, load_executor

PF_WORKER = Path(__file__).resolve().parent / "_pf_engine.py"
PYTHON_TARGET = 20.0
P50_TARGET = 1.25
"""flowport's chat p50 should be at most this many times the LLM latency."""
FLEX_TARGET = 10.0
PROMPTY_TARGET = 1.15
"""flowport's prompty p50 should be at most this many times the LLM latency."""
CASES = ("python", "chat", "flex", "prompty")
ENTRY_ALONE = "(no engine)"


@dataclass(frozen=True)
class Sizes:
    python_lines: int
    pf_python_lines: int
    chat_lines: int
    flex_lines: int
    pf_flex_lines: int
    prompty_lines: int
    prompty_sequential_lines: int
    python_concurrency: int = 32
    chat_concurrency: int = 64
    flex_concurrency: int = 32
    prompty_concurrency: int = 16
    latency_ms: float = 200.0
    prompty_latency_ms: float = 100.0
    warmup: int = 64


DEFAULT = Sizes(
    python_lines=20_000,
    pf_python_lines=3_000,
    chat_lines=1_280,
    flex_lines=100_000,
    pf_flex_lines=10_000,
    prompty_lines=640,
    prompty_sequential_lines=100,
)
QUICK = Sizes(
    python_lines=2_000,
    pf_python_lines=300,
    chat_lines=128,
    flex_lines=10_000,
    pf_flex_lines=1_000,
    prompty_lines=128,
    prompty_sequential_lines=20,
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- flowport, in this process ------------------------------------------------------

Executor = FlowExecutor | FlexExecutor


async def drive(
    executor: Executor, workload: str, start: int, lines: int, concurrency: int
) -> tuple[float, float, list[float], int]:
    """Run ``lines`` lines, ``concurrency`` in flight; return seconds, CPU seconds, latencies, failures.

    Each line's outputs are checked as it ends (as prompt flow's worker does): keeping every
    result to check afterwards would make the garbage collector's work grow with the run.
    """
    make_inputs, check = WORKLOADS[workload]
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

    began, cpu = time.perf_counter(), time.process_time()
    numbered = itertools.count()
    await asyncio.gather(*(worker(numbered) for _ in range(concurrency)))
    return time.perf_counter() - began, time.process_time() - cpu, latencies, failed


def run_flowport(
    flow: Path,
    workload: str,
    lines: int,
    concurrency: int,
    warmup: int,
    connections: Mapping[str, Connection] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Measurement:
    """flowport's executor for ``flow`` (DAG, flex or prompty) over ``lines`` lines."""
    executor = load_executor(flow, connections=connections, environ=environ)

    async def both() -> tuple[float, float, list[float], int]:
        await drive(executor, workload, lines, warmup, concurrency)
        return await drive(executor, workload, 0, lines, concurrency)

    try:
        seconds, cpu, latencies, failed = asyncio.run(both())
    finally:
        executor.close()
    mode = f"run_line x{concurrency}"
    return Measurement("flowport", workload, mode, lines, seconds, failed, latencies, cpu_seconds=cpu)


# -- prompt flow, in its venv -----------------------------------------------------------


def run_pf(
    flow: Path,
    workload: str,
    mode: str,
    lines: int,
    concurrency: int,
    warmup: int,
    home: Path,
    *,
    base_url: str = "",
    extra_env: Mapping[str, str] | None = None,
) -> Measurement:
    args = ["--workload", workload, "--flow", str(flow), "--mode", mode, "--lines", str(lines)]
    args += ["--concurrency", str(concurrency), "--warmup", str(warmup)]
    if base_url:
        args += ["--base-url", base_url]
    env = {"PF_LOGGING_LEVEL": "WARNING", **(extra_env or {})}
    result = run_script(PF_WORKER, args, home, extra_env=env)
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
        cpu_seconds=result["cpu_seconds"],
    )


# -- the benchmarks -----------------------------------------------------------------------


Job = tuple[str, Callable[[], Measurement]]


def repeated(jobs: list[Job], repeat: int) -> list[Measurement]:
    """Run every job ``repeat`` times, interleaved so noise hits all alike; keep each median run."""
    runs: list[list[Measurement]] = [[] for _ in jobs]
    for round_ in range(1, repeat + 1):
        for (label, job), done in zip(jobs, runs, strict=True):
            log(f"{label} (run {round_}/{repeat})")
            done.append(job())
    return [median_run(done) for done in runs]


def no_io_flow(
    flow: Path, workload: str, lines: int, pf_lines: int, concurrency: int, warmup: int, home: Path
) -> list[Job]:
    """flowport with ``concurrency`` in flight; prompt flow one at a time and on asyncio."""
    return [
        (
            f"{workload} flow: flowport, {lines} lines, {concurrency} in flight",
            lambda: run_flowport(flow, workload, lines, concurrency, warmup),
        ),
        (
            f"{workload} flow: prompt flow exec_line, {pf_lines} lines",
            lambda: run_pf(flow, workload, "sequential", pf_lines, 1, warmup, home),
        ),
        (
            f"{workload} flow: prompt flow exec_line_async, {pf_lines} lines, {concurrency} in flight",
            lambda: run_pf(flow, workload, "async", pf_lines, concurrency, warmup, home),
        ),
    ]


def python_flow(sizes: Sizes, home: Path, repeat: int) -> list[Measurement]:
    c, n, pf_n, w = sizes.python_concurrency, sizes.python_lines, sizes.pf_python_lines, sizes.warmup
    return repeated(no_io_flow(PYTHON_FLOW, "python", n, pf_n, c, w, home), repeat)


def entry_alone(lines: int) -> Measurement:
    """The flex flow's function called directly on the same lines, no engine: the ceiling of both."""
    spec = importlib.util.spec_from_file_location("bench_flex_entry", FLEX_FLOW / "entry.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    make_inputs, check = WORKLOADS["flex"]
    rows = [make_inputs(i) for i in range(lines)]
    latencies: list[float] = []
    failed = 0
    began, cpu = time.perf_counter(), time.process_time()
    for row in rows:
        started = time.perf_counter()
        outputs = module.analyse(**row)
        latencies.append(time.perf_counter() - started)
        failed += not check(row, outputs)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    mode = "direct call x1"
    return Measurement(ENTRY_ALONE, "flex", mode, lines, seconds, failed, latencies, cpu_seconds=cpu)


def flex_flow(sizes: Sizes, home: Path, repeat: int) -> list[Measurement]:
    c, n, pf_n, w = sizes.flex_concurrency, sizes.flex_lines, sizes.pf_flex_lines, sizes.warmup
    jobs = no_io_flow(FLEX_FLOW, "flex", n, pf_n, c, w, home)
    jobs.append((f"flex flow: the function alone, {n} lines", lambda: entry_alone(n)))
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
                lambda: run_pf(CHAT_FLOW, "chat", "async", n, c, w, home, base_url=base_url),
            ),
            (
                f"chat flow: prompt flow exec_line in {c} threads, {n} lines",
                lambda: run_pf(CHAT_FLOW, "chat", "threads", n, c, w, home, base_url=base_url),
            ),
        ]
        return repeated(jobs, repeat)


def prompty_flow(sizes: Sizes, home: Path, repeat: int) -> list[Measurement]:
    """Both engines one line at a time, then ``prompty_concurrency`` in flight (pf: threads)."""
    c, n, w = sizes.prompty_concurrency, sizes.prompty_lines, sizes.warmup
    one = sizes.prompty_sequential_lines
    w1 = min(10, one)  # one at a time, a long warm-up would only wait on the LLM
    with llm_server_process(sizes.prompty_latency_ms) as base_url:
        env = {PROMPTY_KEY_ENV: API_KEY, PROMPTY_URL_ENV: base_url}
        environ = {**os.environ, **env}
        at = f"LLM at {sizes.prompty_latency_ms:g} ms"
        jobs: list[Job] = [
            (
                f"prompty: flowport, {one} lines, one at a time, {at}",
                lambda: run_flowport(PROMPTY_FLOW, "prompty", one, 1, w1, environ=environ),
            ),
            (
                f"prompty: prompt flow exec_line, {one} lines",
                lambda: run_pf(PROMPTY_FLOW, "prompty", "sequential", one, 1, w1, home, extra_env=env),
            ),
            (
                f"prompty: flowport, {n} lines, {c} in flight",
                lambda: run_flowport(PROMPTY_FLOW, "prompty", n, c, w, environ=environ),
            ),
            (
                f"prompty: prompt flow exec_line in {c} threads, {n} lines",
                lambda: run_pf(PROMPTY_FLOW, "prompty", "threads", n, c, w, home, extra_env=env),
            ),
        ]
        return repeated(jobs, repeat)


# -- ratios ----------------------------------------------------------------------------------


def lines_per_s_ratio(name: str, rows: list[Measurement], target: float) -> dict[str, Any]:
    """flowport (the first row) against prompt flow's fastest mode, by the wall clock and by CPU."""
    fp = rows[0]
    pf_rows = [m for m in rows if m.engine.startswith("promptflow")]
    best = max(pf_rows, key=lambda m: m.rate)
    ratio = fp.rate / best.rate
    print(
        f"{name:<12} lines/s  flowport {fp.rate:,.0f} / prompt flow {best.rate:,.0f} ({best.mode})"
        f" = {ratio:.1f}x   target >= {target:g}x: {verdict(ratio >= target)}"
    )
    out = {"lines_per_s_ratio": ratio, "pf_mode": best.mode, "target": target}
    cpu_best = max(pf_rows, key=lambda m: m.cpu_rate)
    if fp.cpu_seconds and cpu_best.cpu_seconds:
        cpu_ratio = fp.cpu_rate / cpu_best.cpu_rate
        print(
            f"{name:<12} lines/CPU-s  flowport {fp.cpu_rate:,.0f} / prompt flow {cpu_best.cpu_rate:,.0f}"
            f" ({cpu_best.mode}) = {cpu_ratio:.1f}x"
        )
        out |= {"lines_per_cpu_s_ratio": cpu_ratio, "pf_cpu_mode": cpu_best.mode}
    alone = [m for m in rows if m.engine == ENTRY_ALONE and m.cpu_seconds]
    if alone and fp.cpu_seconds and cpu_best.cpu_seconds:  # what each engine adds to a line
        own = 1e6 / alone[0].cpu_rate
        fp_us, pf_us = 1e6 / fp.cpu_rate - own, 1e6 / cpu_best.cpu_rate - own
        print(
            f"{name:<12} CPU per line: the function {own:.1f} us; the engine adds: flowport {fp_us:.1f} us,"
            f" prompt flow {pf_us:.1f} us ({pf_us / fp_us:.1f}x); so the ratio cannot pass"
            f" {(own + pf_us) / own:.1f}x"
        )
        out |= {"entry_cpu_us": own, "flowport_overhead_cpu_us": fp_us, "pf_overhead_cpu_us": pf_us}
    return out


def chat_ratios(rows: list[Measurement], sizes: Sizes) -> dict[str, Any]:
    fp, best = rows[0], max(rows[1:], key=lambda m: m.rate)
    ratio = fp.rate / best.rate
    bound = sizes.latency_ms * P50_TARGET
    ideal = sizes.chat_concurrency / (sizes.latency_ms / 1000)
    print(
        f"chat flow    lines/s  flowport {fp.rate:,.0f} / prompt flow {best.rate:,.0f} ({best.mode})"
        f" = {ratio:.2f}x   (LLM-bound ideal: {ideal:,.0f} lines/s)"
    )
    print(
        f"chat flow    p50      flowport {fp.p50_ms:.0f} ms, prompt flow {best.p50_ms:.0f} ms,"
        f" LLM latency {sizes.latency_ms:g} ms   target flowport p50 <= {bound:g} ms:"
        f" {verdict(fp.p50_ms <= bound)}"
    )
    return {
        "lines_per_s_ratio": ratio,
        "p50_ratio_pf_over_flowport": best.p50_ms / fp.p50_ms,
        "pf_mode": best.mode,
        "flowport_p50_ms": fp.p50_ms,
        "p50_target_ms": bound,
        "ideal_lines_per_s": ideal,
    }


def prompty_ratios(rows: list[Measurement], sizes: Sizes) -> dict[str, Any]:
    """Each engine's p50 over the LLM latency, one line at a time and with lines in flight."""
    latency = sizes.prompty_latency_ms
    out: dict[str, Any] = {"llm_latency_ms": latency, "target": PROMPTY_TARGET}
    for label, (fp, pf) in (("x1", rows[0:2]), (f"x{sizes.prompty_concurrency}", rows[2:4])):
        fp_over, pf_over = fp.p50_ms / latency, pf.p50_ms / latency
        print(
            f"prompty {label:<4} p50      flowport {fp.p50_ms:.1f} ms ({fp_over:.3f}x the LLM),"
            f" prompt flow {pf.p50_ms:.1f} ms ({pf_over:.3f}x), lines/s {fp.rate:,.0f} / {pf.rate:,.0f}"
            f"   target flowport <= {PROMPTY_TARGET:g}x: {verdict(fp_over <= PROMPTY_TARGET)}"
        )
        out[label] = {
            "flowport_p50_over_llm": fp_over,
            "flowport_p99_over_llm": fp.p99_ms / latency,
            "pf_p50_over_llm": pf_over,
            "pf_mode": pf.mode,
            "lines_per_s_ratio": fp.rate / pf.rate,
        }
    return out


def ratios(results: dict[str, list[Measurement]], sizes: Sizes) -> dict[str, Any]:
    """Print flowport against prompt flow for each case that ran; return the figures."""
    out: dict[str, Any] = {}
    if results.get("python"):
        out["python"] = lines_per_s_ratio("python flow", results["python"], PYTHON_TARGET)
    if results.get("chat"):
        out["chat"] = chat_ratios(results["chat"], sizes)
    if results.get("flex"):
        out["flex"] = lines_per_s_ratio("flex flow", results["flex"], FLEX_TARGET)
    if results.get("prompty"):
        out["prompty"] = prompty_ratios(results["prompty"], sizes)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    parser.add_argument(
        "--only", choices=CASES, action="append", help="run this benchmark only (may be repeated)"
    )
    parser.add_argument("--python-lines", type=int, help="flowport lines on the Python flow")
    parser.add_argument("--pf-python-lines", type=int, help="prompt flow lines on the Python flow")
    parser.add_argument("--chat-lines", type=int, help="lines on the chat flow (each engine)")
    parser.add_argument("--flex-lines", type=int, help="flowport lines on the flex flow")
    parser.add_argument("--pf-flex-lines", type=int, help="prompt flow lines on the flex flow")
    parser.add_argument("--prompty-lines", type=int, help="lines of the prompty in flight (each engine)")
    parser.add_argument(
        "--repeat", type=int, help="runs of each measurement, median kept (default 3, quick 1)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    overrides = {
        "python_lines": args.python_lines,
        "pf_python_lines": args.pf_python_lines,
        "chat_lines": args.chat_lines,
        "flex_lines": args.flex_lines,
        "pf_flex_lines": args.pf_flex_lines,
        "prompty_lines": args.prompty_lines,
    }
    sizes = Sizes(**(asdict(sizes) | {k: v for k, v in overrides.items() if v}))
    cases = args.only or list(CASES)
    benchmarks = {"python": python_flow, "chat": chat_flow, "flex": flex_flow, "prompty": prompty_flow}

    repeat = max(1, args.repeat or (1 if args.quick else 3))
    log(f"prompt flow venv: {ensure_venv().parent.parent}")
    with tempfile.TemporaryDirectory(prefix="flowport-bench-") as scratch:
        home = Path(scratch) / "pf-home"
        results = {case: benchmarks[case](sizes, home, repeat) for case in CASES if case in cases}

    rows = [m for case in results.values() for m in case]
    print()
    print_table(rows)
    print()
    figures = ratios(results, sizes)
    payload = {
        "benchmark": "engine",
        "machine": machine(),
        "versions": {"flowport": importlib.metadata.version("flowport"), "promptflow": PF_VERSION},
        "sizes": asdict(sizes),
        "repeat": repeat,
        "rows": [m.summary() for m in rows],
        "ratios": figures,
    }
    print(f"\nresults: {write_results('engine', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
