"""Worker for ``bench/engine.py``: prompt flow 1.18.5's own executor over many lines.

Runs inside the prompt flow venv (see ``_promptflow.py``), never in flowport's. Modes:

* ``sequential``: ``FlowExecutor.exec_line`` in a loop, one line at a time.
* ``async``: ``exec_line_async`` with ``--concurrency`` lines in flight on one event loop, as
  prompt flow's own async paths drive it (the FastAPI serving app's ``AsyncFlowInvoker``, the
  batch engine's ``_exec_batch``). Sync tools run in the per-line thread pool pf creates.
* ``threads``: ``exec_line`` from a pool of ``--concurrency`` threads, as pf's Flask serving app
  (one request per thread) drives it.

``--flow`` is a DAG flow's folder, a flex flow's folder (``flow.flex.yaml``) or a ``.prompty``
file; ``FlowExecutor.create`` gives the executor prompt flow itself uses for each (for a flex
flow its ``ScriptExecutor``, for a prompty its ``PromptyExecutor``, which has no async path).

Prints one ``BENCH_RESULT {json}`` line: lines, seconds, CPU seconds, failed, latencies, first error.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import API_KEY, CONNECTION_NAME, WORKLOADS, Check
from _promptflow import emit_result
from promptflow.executor import FlowExecutor


class Recorder:
    """Latencies and failures of the measured lines."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.latencies: list[float] = []
        self.failed = 0
        self.first_error: str | None = None
        self._lock = threading.Lock()

    def record(self, inputs: dict[str, Any], result: Any, started: float) -> None:
        elapsed = time.perf_counter() - started
        status = getattr(result.run_info.status, "value", result.run_info.status)
        output = {} if result.output is None else result.output  # a prompty's may be a string
        ok = status == "Completed" and self.check(inputs, output)
        with self._lock:
            self.latencies.append(elapsed)
            if not ok:
                self.failed += 1
                self.first_error = self.first_error or f"{status}: {result.run_info.error or result.output}"


def run_sequential(executor: FlowExecutor, rows: list[dict[str, Any]], recorder: Recorder) -> None:
    for index, inputs in enumerate(rows):
        started = time.perf_counter()
        recorder.record(inputs, executor.exec_line(inputs, index=index), started)


def run_async(
    executor: FlowExecutor, rows: list[dict[str, Any]], recorder: Recorder, concurrency: int
) -> None:
    async def worker(numbered: itertools.count[int]) -> None:
        for index in numbered:
            if index >= len(rows):
                return
            started = time.perf_counter()
            result = await executor.exec_line_async(rows[index], index=index)
            recorder.record(rows[index], result, started)

    async def main() -> None:
        numbered = itertools.count()
        await asyncio.gather(*(worker(numbered) for _ in range(concurrency)))

    asyncio.run(main())


def run_threads(
    executor: FlowExecutor, rows: list[dict[str, Any]], recorder: Recorder, concurrency: int
) -> None:
    def one(index: int) -> None:
        started = time.perf_counter()
        recorder.record(rows[index], executor.exec_line(rows[index], index=index), started)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(len(rows))))


def measure(
    executor: FlowExecutor, args: argparse.Namespace, start: int, count: int
) -> tuple[Recorder, float, float]:
    make_inputs, check = WORKLOADS[args.workload]
    rows = [make_inputs(start + i) for i in range(count)]
    recorder = Recorder(check)
    began, cpu = time.perf_counter(), time.process_time()
    if args.mode == "sequential":
        run_sequential(executor, rows, recorder)
    elif args.mode == "async":
        run_async(executor, rows, recorder, args.concurrency)
    else:
        run_threads(executor, rows, recorder, args.concurrency)
    return recorder, time.perf_counter() - began, time.process_time() - cpu


def flow_file(flow: Path) -> Path:
    """The file prompt flow loads: a ``.prompty`` as given, else the folder's flow YAML."""
    if flow.is_file():
        return flow
    flex = flow / "flow.flex.yaml"
    return flex if flex.is_file() else flow / "flow.dag.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--flow", type=Path, required=True)
    parser.add_argument("--mode", choices=("sequential", "async", "threads"), required=True)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=32)
    parser.add_argument("--base-url", default="")
    args = parser.parse_args()

    flow = args.flow.resolve()
    folder = flow if flow.is_dir() else flow.parent
    connections: dict[str, Any] = {}
    if args.base_url:
        value = {"api_key": API_KEY, "base_url": args.base_url}
        connections[CONNECTION_NAME] = {"type": "OpenAIConnection", "value": value}
    executor = FlowExecutor.create(flow_file(flow), connections, working_dir=folder, raise_ex=False)
    measure(executor, args, args.lines, args.warmup)
    recorder, seconds, cpu = measure(executor, args, 0, args.lines)
    emit_result(
        {
            "lines": args.lines,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "failed": recorder.failed,
            "first_error": recorder.first_error,
            "latencies": recorder.latencies,
        }
    )


if __name__ == "__main__":
    main()
