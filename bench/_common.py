"""Shared by the benchmarks and their prompt flow workers: workloads, statistics, output.

Standard library only: the prompt flow workers import this module from their own venv.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PYTHON_FLOW = REPO / "tests" / "flows" / "three_node_python"
CHAT_FLOW = REPO / "src" / "flowport" / "examples" / "chat_basic"
CONNECTION_NAME = "open_ai_connection"
API_KEY = "bench-key"


# -- workloads ----------------------------------------------------------------


def python_inputs(index: int) -> dict[str, Any]:
    return {"text": f"line {index} of the flowport engine benchmark"}


def chat_inputs(index: int) -> dict[str, Any]:
    return {"question": f"Question {index}: how do I deploy a flow?", "chat_history": []}


def python_output_ok(inputs: dict[str, Any], outputs: dict[str, Any]) -> bool:
    text = inputs["text"].upper()
    return outputs.get("result") == f"{text} ({len(text.split())} words)"


def chat_output_ok(inputs: dict[str, Any], outputs: dict[str, Any]) -> bool:
    return outputs.get("answer") == f"Echo: {inputs['question']}" and outputs.get("topic") == "deployment"


# -- statistics -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Measurement:
    """One engine over one flow: how many lines, how long, and each line's latency (seconds)."""

    engine: str
    flow: str
    mode: str
    lines: int
    seconds: float
    failed: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    rates: list[float] = field(default_factory=list)
    """Lines per second of every repeat, when this is the median of several runs."""

    @property
    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    def summary(self) -> dict[str, Any]:
        keys = ("engine", "flow", "mode", "lines", "seconds", "failed")
        row = {key: getattr(self, key) for key in keys}
        figures = {"lines_per_s": self.rate, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms}
        return row | figures | {"lines_per_s_all_runs": self.rates or [self.rate]}


def median_run(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median lines per second (the upper one of an even count), noting all rates."""
    ordered = sorted(runs, key=lambda m: m.rate)
    chosen = ordered[len(ordered) // 2]
    chosen.rates = [m.rate for m in runs]
    return chosen


def spread(m: Measurement) -> str:
    rates = m.rates or [m.rate]
    return f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else "-"


def print_table(rows: Sequence[Measurement]) -> None:
    header = ("engine", "flow", "mode", "lines", "seconds", "lines/s", "range", "p50 ms", "p99 ms", "failed")
    cells = [
        (
            r.engine,
            r.flow,
            r.mode,
            str(r.lines),
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            spread(r),
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            str(r.failed),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


# -- results ----------------------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def machine() -> dict[str, Any]:
    """Where and on what the numbers were taken: date, CPUs, Python, commit, local changes to src."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "src_modified": bool(_git("status", "--porcelain", "--", "src")),
        "command": " ".join(["bench/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Save a run's numbers as ``bench/results/<name>-<UTC stamp>.json``."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


# -- the test LLM server, in its own process ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def llm_server_process(
    latency_ms: float, python: str = sys.executable, chunk_delay_ms: float | None = None
) -> Iterator[str]:
    """``python -m flowport.testing.llm_server`` in a child process (its own GIL); yields its base URL.

    ``chunk_delay_ms`` is the pause between streamed chunks (the server's own default when None).
    """
    port = free_port()
    command = [
        python,
        "-m",
        "flowport.testing.llm_server",
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
    ]
    if chunk_delay_ms is not None:
        command += ["--chunk-delay-ms", str(chunk_delay_ms)]
    with (
        tempfile.TemporaryFile() as log,
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log) as process,
    ):
        try:
            _wait_healthy(port, process, log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_healthy(port: int, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"test LLM server exited: {log.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("test LLM server did not start within 20 s")
