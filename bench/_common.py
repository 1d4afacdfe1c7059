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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
FLOWPORT = Path(sys.executable).with_name("flowport")
"""The CLI next to the Python running the bench (``.venv/bin/flowport``)."""
RESULTS_DIR = BENCH_DIR / "results"
PYTHON_FLOW = REPO / "tests" / "flows" / "three_node_python"
CHAT_FLOW = REPO / "src" / "flowport" / "examples" / "chat_basic"
FLEX_FLOW = BENCH_DIR / "flows" / "flex_text"
PROMPTY_FLOW = BENCH_DIR / "flows" / "prompty_echo" / "chat.prompty"
PROMPTY_KEY_ENV = "FLOWPORT_BENCH_LLM_KEY"
PROMPTY_URL_ENV = "FLOWPORT_BENCH_LLM_URL"
"""The bench prompty reads its model's key and base URL from these (``${env:...}``)."""
CONNECTION_NAME = "open_ai_connection"
API_KEY = "bench-key"


# -- workloads ----------------------------------------------------------------


def python_inputs(index: int) -> dict[str, Any]:
    return {"text": f"line {index} of the flowport engine benchmark"}


def chat_inputs(index: int) -> dict[str, Any]:
    return {"question": f"Question {index}: how do I deploy a flow?", "chat_history": []}


def flex_inputs(index: int) -> dict[str, Any]:
    text = f"Line {index}: the flow engine reads line {index} and the engine counts the words of line {index}"
    return {"text": text}


def prompty_inputs(index: int) -> dict[str, Any]:
    return {"question": f"Question {index}: how do I deploy a prompty?"}


def python_output_ok(inputs: dict[str, Any], outputs: dict[str, Any]) -> bool:
    text = inputs["text"].upper()
    return outputs.get("result") == f"{text} ({len(text.split())} words)"


def chat_output_ok(inputs: dict[str, Any], outputs: dict[str, Any]) -> bool:
    return outputs.get("answer") == f"Echo: {inputs['question']}" and outputs.get("topic") == "deployment"


def flex_output_ok(inputs: dict[str, Any], outputs: dict[str, Any]) -> bool:
    words = inputs["text"].lower().replace(":", "").split()
    return (
        outputs.get("words") == len(words)
        and outputs.get("slug") == "-".join(words[:6])
        and outputs.get("keywords") == ["line", words[1], "engine"]
    )


def prompty_output_ok(inputs: dict[str, Any], outputs: Any) -> bool:
    """flowport answers ``{"output": text}``, prompt flow's executor the bare text."""
    answer = outputs.get("output") if isinstance(outputs, dict) else outputs
    return answer == f"Echo: {inputs['question']}"


Inputs = Callable[[int], dict[str, Any]]
Check = Callable[[dict[str, Any], Any], bool]
WORKLOADS: dict[str, tuple[Inputs, Check]] = {
    "python": (python_inputs, python_output_ok),
    "chat": (chat_inputs, chat_output_ok),
    "flex": (flex_inputs, flex_output_ok),
    "prompty": (prompty_inputs, prompty_output_ok),
}
"""Each engine benchmark workload: the inputs of line N, and whether a line's outputs are right."""


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
    cpu_seconds: float = 0.0
    """CPU time the engine's process used for the lines (all its threads): steadier than the
    wall clock on a machine other work is using."""

    @property
    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0

    @property
    def cpu_rate(self) -> float:
        """Lines per CPU second."""
        return self.lines / self.cpu_seconds if self.cpu_seconds else 0.0

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
        figures |= {"cpu_seconds": self.cpu_seconds, "lines_per_cpu_s": self.cpu_rate}
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
    header = ("engine", "flow", "mode", "lines", "seconds", "lines/s", "range", "lines/CPU-s")
    header += ("p50 ms", "p99 ms", "failed")
    cells = [
        (
            r.engine,
            r.flow,
            r.mode,
            str(r.lines),
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            spread(r),
            f"{r.cpu_rate:,.0f}" if r.cpu_seconds else "-",
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


# -- HTTP load from worker processes (the endpoint benchmarks) ----------------------------------
#
# A load run is one or more worker processes (multiprocessing, spawned), each running
# ``connections`` asyncio clients (uvloop when importable) that send the same POST one after the
# other on their own kept-alive HTTP/1.1 connection. Every request is recorded: its start
# (``time.monotonic()``, comparable across processes), latency, status and, optionally, the value
# of one response header; failures keep what went wrong.

TRANSPORT_ERROR = -1
"""Status recorded when the connection failed (connect, reset, closed early, timeout)."""
WRONG_BODY = -2
"""Status recorded for a 200 whose body is not the expected one."""
LOAD_REQUEST_TIMEOUT = 30.0
"""Seconds one request may take before it counts as a transport error."""
_KEPT_ERRORS = 2000


@dataclass(frozen=True)
class Target:
    """Where the load goes: one POST with a fixed body, and what a good answer's body is."""

    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    host: str = "127.0.0.1"
    expected: bytes | None = None
    """The body every 2xx answer must have (None: any body)."""
    tag_header: str = ""
    """A response header whose value is recorded for each request (``azureml-model-deployment``)."""

    def request_bytes(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: application/json",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class LoadRecord:
    """Every request of a load run (parallel arrays), merged over the worker processes."""

    starts: list[float] = field(default_factory=list)
    """``time.monotonic()`` when the request was written (or its connection opened)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds until the last byte of the answer (or the failure)."""
    statuses: list[int] = field(default_factory=list)
    """HTTP status, ``TRANSPORT_ERROR`` or ``WRONG_BODY``."""
    tags: list[int] = field(default_factory=list)
    """Index into ``tag_names`` of the tag header's value, -1 when absent."""
    tag_names: list[str] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    """Request index -> what went wrong (the first failures of each process)."""
    seconds: float = 0.0
    """Wall clock of the run (the longest of the processes)."""
    cpu_seconds: float = 0.0
    """User + system CPU of the load processes during the run."""
    processes: int = 0
    connections: int = 0

    @property
    def requests(self) -> int:
        return len(self.statuses)

    def ok_indices(self) -> list[int]:
        return [i for i, status in enumerate(self.statuses) if 200 <= status < 300]

    @property
    def ok(self) -> int:
        return sum(1 for status in self.statuses if 200 <= status < 300)

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def client_cpu(self) -> float:
        """CPU cores the load processes used on average (1.0 = one core busy)."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0

    def ok_latencies(self, indices: Sequence[int] | None = None) -> list[float]:
        chosen = range(self.requests) if indices is None else indices
        return [self.latencies[i] for i in chosen if 200 <= self.statuses[i] < 300]

    def failure_kinds(self, indices: Sequence[int] | None = None) -> dict[str, int]:
        """Failures counted by kind: ``status 503 NoInstance``, ``transport ConnectionResetError`` ..."""
        chosen = range(self.requests) if indices is None else indices
        kinds: dict[str, int] = {}
        for i in chosen:
            status = self.statuses[i]
            if 200 <= status < 300:
                continue
            kind = failure_kind(status, self.errors.get(i, ""))
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    @classmethod
    def merge(cls, parts: Sequence[dict[str, Any]]) -> LoadRecord:
        merged = cls(processes=len(parts))
        for part in parts:
            offset = len(merged.statuses)
            names = part["tag_names"]
            remap = []
            for name in names:
                if name not in merged.tag_names:
                    merged.tag_names.append(name)
                remap.append(merged.tag_names.index(name))
            merged.starts.extend(part["starts"])
            merged.latencies.extend(part["latencies"])
            merged.statuses.extend(part["statuses"])
            merged.tags.extend(remap[t] if t >= 0 else -1 for t in part["tags"])
            merged.errors.update({offset + i: message for i, message in part["errors"].items()})
            merged.seconds = max(merged.seconds, part["seconds"])
            merged.cpu_seconds += part["cpu_seconds"]
            merged.connections += part["connections"]
        return merged


def failure_kind(status: int, message: str) -> str:
    """A short name for a failure: the status and the error code of its body, or the exception."""
    if status == TRANSPORT_ERROR:
        return "transport " + (message.split(":", 1)[0] or "error")
    if status == WRONG_BODY:
        return "wrong body"
    code = ""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        code = json.loads(message.partition(" ")[2])["error"]["code"]
    return f"status {status}" + (f" {code}" if code else "")


async def read_chunks(reader: Any) -> AsyncIterator[bytes]:
    """The chunks of a ``transfer-encoding: chunked`` body, as they arrive (trailers skipped)."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        yield (await reader.readexactly(size + 2))[:-2]


async def _read_answer(reader: Any) -> tuple[int, bytes, bytes, bool]:
    """One HTTP/1.1 answer: status, lower-cased head, body, whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        body = await reader.readexactly(int(lower[at + 17 : end]))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        body = b"".join([part async for part in read_chunks(reader)])
    else:
        return status, lower, await reader.read(), False
    return status, lower, body, b"\r\nconnection: close" not in lower


async def _drive(conn: Any, target: Target, connections: int, seconds: float | None) -> dict[str, Any]:
    """Run the clients until ``seconds`` passed or a message arrives on ``conn``; the record."""
    import asyncio
    import resource
    from array import array

    loop = asyncio.get_running_loop()
    request = target.request_bytes()
    expected = target.expected
    tag = ("\r\n" + target.tag_header.lower() + ":").encode() if target.tag_header else b""
    starts, latencies = array("d"), array("d")
    statuses, tags = array("h"), array("h")
    tag_names: list[str] = []
    errors: dict[int, str] = {}
    kinds: set[tuple[int, str]] = set()
    stopping = False

    def on_message() -> None:
        nonlocal stopping
        stopping = True
        loop.remove_reader(conn.fileno())
        os.set_blocking(conn.fileno(), True)  # the event loop made it non-blocking
        with contextlib.suppress(EOFError, OSError):
            conn.recv()

    def note(start: float, latency: float, status: int, tag_index: int, error: str = "") -> None:
        if error:
            kind = (status, error[:80])  # beyond the first failures, keep the first of each kind
            if len(errors) < _KEPT_ERRORS or kind not in kinds:
                errors[len(statuses)] = error
                kinds.add(kind)
        starts.append(start)
        latencies.append(latency)
        statuses.append(status)
        tags.append(tag_index)

    def tag_of(head: bytes) -> int:
        at = head.find(tag)
        if at < 0:
            return -1
        value = head[at + len(tag) : head.index(b"\r\n", at + 2)].strip().decode("latin-1")
        if value not in tag_names:
            tag_names.append(value)
        return tag_names.index(value)

    async def client() -> None:
        reader = writer = None
        while not stopping and time.monotonic() < deadline:
            start = time.monotonic()
            try:
                async with asyncio.timeout(LOAD_REQUEST_TIMEOUT):
                    if writer is None:
                        opened = asyncio.open_connection(target.host, target.port, limit=1 << 20)
                        reader, writer = await opened
                    writer.write(request)
                    status, head, body, keep = await _read_answer(reader)
            except (OSError, EOFError, ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
                note(start, time.monotonic() - start, TRANSPORT_ERROR, -1, f"{type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            latency = time.monotonic() - start
            tag_index = tag_of(head) if tag else -1
            if not 200 <= status < 300:
                note(start, latency, status, tag_index, f"{status} {body[:400].decode(errors='replace')}")
            elif expected is not None and body != expected:
                note(start, latency, WRONG_BODY, tag_index, body[:400].decode(errors="replace"))
            else:
                note(start, latency, status, tag_index)
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    loop.add_reader(conn.fileno(), on_message)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    began = time.monotonic()
    deadline = began + seconds if seconds is not None else math.inf
    try:
        await asyncio.gather(*(client() for _ in range(connections)))
    finally:
        if not stopping:
            loop.remove_reader(conn.fileno())
            os.set_blocking(conn.fileno(), True)
    elapsed = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    return {
        "starts": starts,
        "latencies": latencies,
        "statuses": statuses,
        "tags": tags,
        "tag_names": tag_names,
        "errors": errors,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "connections": connections,
    }


def _load_worker(conn: Any, target: Target, connections: int) -> None:
    """A load process: waits for ``{"cmd": "run", "seconds": s | None}``, answers with its record."""
    import asyncio

    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message.get("cmd") == "exit":
                return
            if message.get("cmd") == "run":
                conn.send(runner.run(_drive(conn, target, connections, message.get("seconds"))))


class LoadPool:
    """``processes`` load processes sharing ``connections`` between them.

    ``run(seconds)`` is one timed run; ``start()`` then ``stop()`` runs until told to stop.
    """

    def __init__(self, target: Target, connections: int, processes: int = 1) -> None:
        import multiprocessing

        processes = max(1, min(processes, connections))
        self.target = target
        self.shares = [connections // processes + (i < connections % processes) for i in range(processes)]
        self._context = multiprocessing.get_context("spawn")
        self._conns: list[Any] = []
        self._processes: list[Any] = []

    def __enter__(self) -> LoadPool:
        for share in self.shares:
            parent, child = self._context.Pipe()
            args = (child, self.target, share)
            process = self._context.Process(target=_load_worker, args=args, daemon=True)
            process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send({"cmd": "exit"})
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for conn in self._conns:
            conn.close()

    def start(self, seconds: float | None = None) -> None:
        for conn in self._conns:
            conn.send({"cmd": "run", "seconds": seconds})

    def stop(self) -> LoadRecord:
        for conn in self._conns:
            conn.send({"cmd": "stop"})
        return self.collect()

    def collect(self, limit: float = LOAD_REQUEST_TIMEOUT + 600) -> LoadRecord:
        parts = []
        for conn in self._conns:
            if not conn.poll(limit):
                raise RuntimeError("a load process did not report within the time limit")
            parts.append(conn.recv())
        return LoadRecord.merge(parts)

    def run(self, seconds: float) -> LoadRecord:
        self.start(seconds)
        return self.collect(seconds + LOAD_REQUEST_TIMEOUT + 60)


# -- processes and their CPU, from /proc --------------------------------------------------------


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it (by parent pid), ``root`` first."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path("/proc", name, "stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes (those still alive)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and everything it started, live or already reaped.

    A process's own user + system time plus that of its children it has waited for; summed over
    ``root`` and its live descendants, this only grows, even as instances come and go.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in descendants(root):
        try:
            fields = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / tick


def machine_cpu_seconds() -> float:
    """CPU seconds all processes of this machine used so far (every core, from ``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# -- a flowport server in its own process, and its REST API -------------------------------------

_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_SERVER_ENV_DROPPED = ("FLOWPORT_DATABASE_URL", "FLOWPORT_ADMIN_TOKEN", "FLOWPORT_URL", "FLOWPORT_PUBLIC_URL")


class ApiFailure(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path}: {status} {json.dumps(body)[:1000]}")
        self.status = status
        self.body = body


class FlowportServer:
    """``flowport server --port P`` with its own ``FLOWPORT_HOME`` (SQLite), and its admin API.

    The server's output goes to ``<home>/server.log``; instance logs are under
    ``<home>/runtime/logs/<endpoint>/<deployment>/``.
    """

    def __init__(self, home: Path, flowport: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.flowport = flowport
        self.extra_env = extra_env or {}
        self.port = 0
        self.token = ""
        self.startup_s = 0.0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def instance_logs(self) -> Path:
        return self.home / "runtime" / "logs"

    def __enter__(self) -> FlowportServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FlowportServer:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROPPED}
        env |= {"FLOWPORT_HOME": str(self.home), **self.extra_env}
        # As root, instances run as nobody, who cannot run an interpreter under /root: benchmarks
        # of our own flows keep the server's user unless told otherwise.
        env.setdefault("FLOWPORT_INSTANCE_USER", "root")
        command = [str(self.flowport), "server", "--host", "127.0.0.1", "--port", str(self.port)]
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = began + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"flowport server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with _LOOPBACK.open(f"{self.url}/api/v1/health", timeout=2) as answer:
                    if answer.status == 200 and not json.loads(answer.read()).get("recovering"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"flowport server did not answer within 120 s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.startup_s = time.monotonic() - began
        self.token = (self.home / "admin_token").read_text().strip()
        return self

    def stop(self) -> None:
        """SIGTERM (the server drains its instances), SIGKILL after 60 s; then any instance left."""
        process = self.process
        if process is None:
            return
        self.process = None
        tree = descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        for pid in tree[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- the REST API ---------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> tuple[int, Any]:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}{query}", data=data, headers=headers, method=method
        )
        try:
            with _LOOPBACK.open(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        status, answer = self.api(method, path, body, params)
        if status >= 300:
            raise ApiFailure(method, path, status, answer)
        return answer

    def wait(self, operation: dict[str, Any], limit: float = 300, poll: float = 0.02) -> dict[str, Any]:
        """Poll ``GET /operations/{id}`` until the operation is no longer Running."""
        deadline = time.monotonic() + limit
        while operation["status"] == "Running":
            if time.monotonic() > deadline:
                raise RuntimeError(f"operation {operation['id']} still running after {limit:g} s")
            time.sleep(poll)
            operation = self.ok("GET", f"/operations/{operation['id']}")
        return operation

    def create_endpoint(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.ok("POST", "/endpoints", {"spec": {"name": name, **fields}})

    def create_deployment(
        self, endpoint: str, name: str, spec: dict[str, Any], all_traffic: bool = False
    ) -> dict[str, Any]:
        """POST the deployment; returns its operation (still running)."""
        params = {"name": name, **({"all_traffic": "true"} if all_traffic else {})}
        return self.ok("POST", f"/endpoints/{endpoint}/deployments", {"spec": spec}, params)["operation"]

    def update_deployment(self, endpoint: str, name: str, *assignments: str) -> dict[str, Any]:
        """PATCH with az's ``--set`` assignments; returns the operation (still running)."""
        return self.ok("PATCH", f"/endpoints/{endpoint}/deployments/{name}", {"set": list(assignments)})[
            "operation"
        ]

    def delete_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        return self.ok("DELETE", f"/endpoints/{endpoint}/deployments/{name}")["operation"]

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> dict[str, Any]:
        return self.ok("PUT", f"/endpoints/{endpoint}/traffic", {"traffic": traffic})["operation"]

    def deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        return dict(self.ok("GET", f"/endpoints/{endpoint}/deployments/{name}"))

    def key(self, endpoint: str) -> str:
        return str(self.ok("POST", f"/endpoints/{endpoint}/credentials")["primaryKey"])

    def score(self, endpoint: str, key: str, body: bytes, timeout: float = 30) -> tuple[int, bytes]:
        """One POST to the gateway's ``/endpoints/{endpoint}/score``: status and body."""
        request = urllib.request.Request(
            f"{self.url}/endpoints/{endpoint}/score",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with _LOOPBACK.open(request, timeout=timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
