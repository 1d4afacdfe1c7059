"""HTTP serving benchmark: ``flowport flow serve`` against ``pf flow serve``, in the same run.

Each server is started as its own process (one after the other, never at the same time) on a
copy of the flow in a scratch folder and driven over 127.0.0.1 by a load generator:

    pf flow serve --source <flow> --port <p> --host 127.0.0.1 --engine fastapi --skip-open-browser
    flowport flow serve --source <flow> --host 127.0.0.1 --port <p>

1. ``python``: the 3-node Python flow, body ``{"text": "hello world"}``, 32 connections for
   ``--seconds`` (20 s; 10 s with ``--quick``): req/s, p50/p99. flowport runs twice, with 1 and
   with 2 worker processes (``PROMPTFLOW_WORKER_NUM``). Target: flowport (1 worker) >= 15x pf.
2. ``chat``: the chat flow against the test LLM server (its own process, 200 ms latency),
   64 connections. Targets: flowport >= 3x pf's req/s, flowport p50 <= 1.15 x 200 ms.
3. ``stream``: the chat flow with ``Accept: text/event-stream``, 1000 concurrent clients, each
   reading whole SSE streams, 3000 requests in all (or what a time limit allows): completed,
   errors, p50/p99 of the first body byte and of the last. Target: 0 errors for flowport.

Load: ``wrk`` (one thread, a Lua script for the POST body and a non-2xx count) when it is on the
PATH, else a Python asyncio client (raw HTTP/1.1 on keep-alive connections; it also checks every
answer). Scenario 3 always uses the Python client, which reads and checks each stream. Before
each measurement the server gets ``--warmup`` seconds of the same load, not counted. Every
server's startup (process start until ``/health`` answers 200) and memory (RSS of its process
tree, sampled during the load, and each process's peak ``VmHWM``) are reported; target: at most
80 MiB per flowport worker. flowport runs with its concurrency limits raised for load
(``FLOWPORT_MAX_CONCURRENT_REQUESTS=2000``, ``FLOWPORT_MAX_QUEUE_WAIT_MS=60000``,
``FLOWPORT_REQUEST_TIMEOUT_MS=60000``); prompt flow with ``PF_LOGGING_LEVEL=WARNING``, as in
``bench/engine.py``. The open-file limit is raised to the hard limit for this process and
every server it starts.

    .venv/bin/python bench/serve.py                  # default sizes: about 4.5 minutes on 2 cores
    .venv/bin/python bench/serve.py --repeat 3       # scenarios 1 and 2 three times, median kept
    .venv/bin/python bench/serve.py --quick          # 10 s runs, 250 streaming clients: < 2 minutes
    .venv/bin/python bench/serve.py --only python    # or chat, stream; --seconds, --stream-clients ...
    .venv/bin/python bench/serve.py --tracing --repeat 3 --seconds 8   # the cost of tracing

``--tracing`` measures what tracing costs instead of comparing with prompt flow: scenarios 1 and 2
serve flowport (1 worker) three ways, interleaved in every round: untraced, tracing to the
built-in store (``FLOWPORT_TRACE_FILE``, a JSON lines file in the scratch folder), and exporting
over OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``) to a receiver in its own process
(``python -m flowport.testing.otlp``, which decodes every request). It prints each traced
variant's req/s and p50 against the untraced one's. Targets: the store costs at most 10 % of the
Python flow's req/s; the chat flow's p50 moves by no more than the spread of the untraced runs.
Every row also reports the server's CPU time per request (user + system time of its process
tree during the measured load, over the requests answered).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from _common import (
    API_KEY,
    CHAT_FLOW,
    CONNECTION_NAME,
    FLOWPORT,
    PYTHON_FLOW,
    REPO,
    chat_output_ok,
    descendants,
    free_port,
    llm_server_process,
    machine,
    percentile,
    python_output_ok,
    read_chunks,
    tree_cpu_seconds,
    verdict,
    write_results,
)
from _promptflow import PF_VERSION, ensure_venv, pf_env, venv_pf

HOST = "127.0.0.1"
PYTHON_BODY: dict[str, Any] = {"text": "hello world"}
CHAT_BODY: dict[str, Any] = {"question": "How do I deploy a flow to an endpoint?", "chat_history": []}
JSON_ACCEPT = "application/json"
SSE_ACCEPT = "text/event-stream"
FLOWPORT_LOAD_ENV = {
    "FLOWPORT_MAX_CONCURRENT_REQUESTS": "2000",
    "FLOWPORT_MAX_QUEUE_WAIT_MS": "60000",
    "FLOWPORT_REQUEST_TIMEOUT_MS": "60000",
}
PYTHON_TARGET = 15.0
CHAT_TARGET = 3.0
P50_TARGET = 1.15
"""flowport's chat p50 should be at most this many times the LLM latency."""
RSS_TARGET_MIB = 80.0
MIB = 1024 * 1024
REQUEST_TIMEOUT = 60.0
"""Seconds one request may take in the Python client before it counts as a socket error."""

T = TypeVar("T")
Check = Callable[[dict[str, Any], dict[str, Any]], bool]


@dataclass(frozen=True)
class Sizes:
    seconds: float = 20.0
    warmup: float = 3.0
    python_connections: int = 32
    chat_connections: int = 64
    stream_clients: int = 1000
    stream_requests: int = 3000
    stream_time_limit: float = 120.0
    """Seconds after which the streaming clients start no new request."""
    latency_ms: float = 200.0


DEFAULT = Sizes()
QUICK = Sizes(seconds=10.0, warmup=2.0, stream_clients=250, stream_requests=750, stream_time_limit=60.0)


@dataclass(frozen=True)
class ServerSpec:
    tool: str
    """``flowport`` or ``promptflow``."""
    workers: int = 1
    tracing: str = ""
    """flowport only: ``store`` (the built-in store's file), ``otlp`` (OTLP/HTTP export), or untraced."""

    @property
    def label(self) -> str:
        if self.tool == "flowport":
            traced = {"store": ", trace store", "otlp": ", trace OTLP"}.get(self.tracing, "")
            return f"flowport x{self.workers} worker" + ("s" if self.workers > 1 else "") + traced
        return f"promptflow {PF_VERSION}"


PF = ServerSpec("promptflow")
FP1 = ServerSpec("flowport", 1)
FP2 = ServerSpec("flowport", 2)
FP1_STORE = ServerSpec("flowport", 1, "store")
FP1_OTLP = ServerSpec("flowport", 1, "otlp")
TRACED = (FP1, FP1_STORE, FP1_OTLP)
TRACING_TARGET = 0.90
"""Traced to the built-in store, the Python flow keeps at least this share of its untraced req/s."""


@dataclass(frozen=True)
class Context:
    scratch: Path
    flowport_home: Path
    pf_home: Path
    use_wrk: bool
    otlp_url: str = ""
    """The OTLP receiver's URL, with ``--tracing``."""


@dataclass
class Result:
    """One server under one scenario's load."""

    scenario: str
    server: str
    client: str
    connections: int
    seconds: float
    requests: int
    """Requests sent (wrk: completed, any status)."""
    ok: int
    """Answered 2xx (and, for the Python client, with the expected outputs)."""
    non_2xx: int
    socket_errors: int
    wrong: int
    p50_ms: float
    p99_ms: float
    first_p50_ms: float | None = None
    first_p99_ms: float | None = None
    startup_s: float = 0.0
    workers: int = 1
    worker_peak_mib: float = 0.0
    tree_peak_mib: float = 0.0
    processes: list[dict[str, Any]] = field(default_factory=list)
    open_files_limit: int = 0
    cpu_ms_per_request: float = 0.0
    """User + system CPU time of the server's process tree during the measured load, per answer."""
    trace_dropped: int | None = None
    """Spans the traced server dropped (its ``flowport_trace_spans_dropped_total``), warm-up included."""
    runs: list[dict[str, float]] = field(default_factory=list)
    """Every repeat's figures, when this is the median of several runs."""

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors + self.wrong

    def figures(self) -> dict[str, float]:
        """The headline figures of this run, as kept for each repeat."""
        return {
            "req_per_s": self.rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "worker_peak_mib": self.worker_peak_mib,
            "startup_s": self.startup_s,
            "cpu_ms_per_request": self.cpu_ms_per_request,
        }

    def summary(self) -> dict[str, Any]:
        return asdict(self) | {"req_per_s": self.rate, "errors": self.errors}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def src_fingerprint() -> str:
    """A digest of the names, sizes and times of flowport's sources: to notice edits during a run."""
    digest = hashlib.sha1()
    for path in sorted((REPO / "src").rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def source_changed(before: str, say: Callable[[str], None] = log) -> bool:
    """Whether flowport's sources changed since ``before`` (``src_fingerprint``), said with ``say``."""
    changed = src_fingerprint() != before
    if changed:
        say("WARNING: files under src/ changed during the run; servers may have run different code")
    return changed


def raise_open_files() -> int:
    """Raise this process's soft open-file limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- memory of a server's process tree, from /proc ------------------------------------


def status_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process in KiB; empty once it has gone."""
    try:
        lines = Path("/proc", str(pid), "status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def role(pid: int, root: int) -> str:
    """``worker`` (uvicorn's spawned worker), ``helper`` (multiprocessing's tracker) or ``main``."""
    try:
        command = Path("/proc", str(pid), "cmdline").read_bytes()
    except OSError:
        return "gone"
    if b"resource_tracker" in command:
        return "helper"
    if b"spawn_main" in command:
        return "worker"
    return "main" if pid == root else "other"


def open_files_limit(pid: int) -> int:
    for line in Path("/proc", str(pid), "limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread, while in use."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self.root = root
        self.interval = interval
        self.tree_peak_kib = 0
        self.peaks: dict[int, int] = {}
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        total = 0
        for pid in descendants(self.root):
            figures = status_kib(pid)
            if not figures:
                continue
            total += figures["VmRSS"]
            self.peaks[pid] = max(self.peaks.get(pid, 0), figures["VmHWM"])
            self.roles.setdefault(pid, role(pid, self.root))
        self.tree_peak_kib = max(self.tree_peak_kib, total)

    def worker_peak_mib(self) -> float:
        """The highest peak RSS of a process serving requests: the workers, else the main process."""
        workers = [pid for pid, name in self.roles.items() if name == "worker"] or [self.root]
        return max(self.peaks.get(pid, 0) for pid in workers) * 1024 / MIB

    def processes(self) -> list[dict[str, Any]]:
        return [
            {"pid": pid, "role": self.roles[pid], "peak_mib": round(peak * 1024 / MIB, 1)}
            for pid, peak in sorted(self.peaks.items())
        ]


# -- the servers ----------------------------------------------------------------------


@dataclass
class Server:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    startup_s: float
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/score"


def run_quiet(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command[:3])} failed ({done.returncode}):\n{tail}")


def flowport_env(ctx: Context, workers: int = 1) -> dict[str, str]:
    env = {**os.environ, "FLOWPORT_HOME": str(ctx.flowport_home), **FLOWPORT_LOAD_ENV}
    env["PROMPTFLOW_WORKER_NUM"] = str(workers)
    return env


def flow_copy(ctx: Context, spec: ServerSpec, flow: Path) -> Path:
    """Each tool serves its own copy of the flow (prompt flow writes into the flow folder)."""
    target = ctx.scratch / "flows" / spec.tool / flow.name
    if not target.exists():
        shutil.copytree(flow, target, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
    return target


@contextlib.contextmanager
def serving(ctx: Context, spec: ServerSpec, flow: Path) -> Iterator[Server]:
    """Start the server in its own process group; yield it once ``/health`` answers 200."""
    port = free_port()
    source = str(flow_copy(ctx, spec, flow))
    if spec.tool == "flowport":
        command = [str(FLOWPORT), "flow", "serve", "--source", source, "--host", HOST, "--port", str(port)]
        env = flowport_env(ctx, spec.workers)
        if spec.tracing == "store":
            env["FLOWPORT_TRACE_FILE"] = str(ctx.scratch / f"spans-{port}.jsonl")
        elif spec.tracing == "otlp":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = ctx.otlp_url
    else:
        command = [str(venv_pf()), "flow", "serve", "--source", source, "--port", str(port), "--host", HOST]
        command += ["--engine", "fastapi", "--skip-open-browser"]
        env = pf_env(ctx.pf_home, {"PF_LOGGING_LEVEL": "WARNING"})
    log_path = ctx.scratch / f"{spec.tool}-{spec.workers}{spec.tracing}-{flow.name}-{port}.log"
    with log_path.open("wb") as out:
        began = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=ctx.scratch, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_healthy(port, process, log_path)
        yield Server(spec, process, port, time.perf_counter() - began, log_path)
    finally:
        stop(process)


def spans_dropped(port: int) -> int | None:
    """``flowport_trace_spans_dropped_total`` from the server's ``/metrics`` (None: not there)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("flowport_trace_spans_dropped_total"):
                return int(float(line.split()[-1]))
    return None


def wait_healthy(
    port: int, process: subprocess.Popen[bytes], log_path: Path, limit: float = 120.0, path: str = "/health"
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}):\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"server did not answer {path} within {limit:g} s:\n{tail(log_path)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group (it was started in a new session), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def check_once(server: Server, body: dict[str, Any], check: Check) -> None:
    """One request before the load: the server answers 200 with the expected outputs."""
    request = urllib.request.Request(
        server.url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            outputs = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{server.spec.label}: {exc.code} {exc.read()[:500]!r}") from None
    if not check(body, outputs):
        raise RuntimeError(f"{server.spec.label}: unexpected outputs {outputs}")


# -- load with wrk ----------------------------------------------------------------------

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "%(accept)s"
%(headers)s

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"non2xx\\": %%d, \\"connect\\": %%d, " ..
    "\\"read\\": %%d, \\"write\\": %%d, \\"timeout\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d}\\n",
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(
    ctx: Context,
    url: str,
    body: dict[str, Any],
    connections: int,
    seconds: float,
    headers: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    """One wrk run (one thread, ``connections`` keep-alive connections); its ``done()`` figures."""
    script = ctx.scratch / "wrk-post.lua"
    extra = "\n".join(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers)
    script.write_text(WRK_SCRIPT % {"body": json.dumps(body), "accept": JSON_ACCEPT, "headers": extra})
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return dict(json.loads(line.removeprefix("WRK_RESULT ")))
    raise RuntimeError(f"wrk gave no result ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).splitlines()[0]


# -- load with a Python asyncio client -----------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    first: float
    """Seconds from sending the request to the first body byte."""
    last: float
    keep_alive: bool


@dataclass
class Tally:
    requests: int = 0
    ok: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    wrong: int = 0
    first_error: str = ""
    firsts: list[float] = field(default_factory=list)
    lasts: list[float] = field(default_factory=list)


def request_bytes(port: int, body: dict[str, Any], accept: str) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST /score HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: {accept}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> Reply:
    """Send one request on a kept-alive connection; read the whole answer (length or chunked)."""
    started = time.perf_counter()
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    first = 0.0
    if headers.get("transfer-encoding") == "chunked":
        parts = []
        async for part in read_chunks(reader):
            parts.append(part)
            first = first or time.perf_counter() - started
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers["content-length"]))
    last = time.perf_counter() - started
    return Reply(status, body, first or last, last, headers.get("connection") != "close")


def outputs_of(reply: Reply, streamed: bool) -> dict[str, Any]:
    """The outputs of a JSON answer, or of an SSE answer (string chunks of a key joined)."""
    if not streamed:
        return dict(json.loads(reply.body))
    outputs: dict[str, Any] = {}
    for line in reply.body.decode().split("\n"):
        if not line.startswith("data:"):
            continue
        for key, value in json.loads(line[5:]).items():
            joined = isinstance(value, str) and isinstance(outputs.get(key), str)
            outputs[key] = outputs[key] + value if joined else value
    return outputs


async def python_load(
    port: int,
    body: dict[str, Any],
    check: Check,
    *,
    connections: int,
    seconds: float,
    max_requests: int,
    accept: str = JSON_ACCEPT,
) -> tuple[Tally, float]:
    """``connections`` clients, each sending requests one after the other on its own kept-alive
    connection, until ``max_requests`` were sent or ``seconds`` passed; returns the tally and the
    wall-clock seconds until the last answer."""
    request = request_bytes(port, body, accept)
    streamed = accept == SSE_ACCEPT
    tally = Tally()
    numbered = itertools.count()
    deadline = time.perf_counter() + seconds

    def failed(kind: str, error: BaseException | str) -> None:
        tally.first_error = tally.first_error or f"{kind}: {error!r}"[:500]

    async def client() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while next(numbered) < max_requests and time.perf_counter() < deadline:
                tally.requests += 1
                try:
                    if reader is None or writer is None:
                        opening = asyncio.open_connection(HOST, port, limit=1 << 20)
                        reader, writer = await asyncio.wait_for(opening, REQUEST_TIMEOUT)
                    reply = await asyncio.wait_for(exchange(reader, writer, request), REQUEST_TIMEOUT)
                except (OSError, EOFError, ValueError, KeyError, IndexError, TimeoutError) as exc:
                    tally.socket_errors += 1
                    failed("socket", exc)
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                if not 200 <= reply.status < 300:
                    tally.non_2xx += 1
                    failed(f"status {reply.status}", reply.body[:300].decode(errors="replace"))
                else:
                    try:
                        good = check(body, outputs_of(reply, streamed))
                    except (ValueError, TypeError, AttributeError):  # not JSON, or not an object
                        good = False
                    if good:
                        tally.ok += 1
                        tally.firsts.append(reply.first)
                        tally.lasts.append(reply.last)
                    else:
                        tally.wrong += 1
                        failed("wrong outputs", reply.body[:300].decode(errors="replace"))
                if not reply.keep_alive and writer is not None:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return tally, time.perf_counter() - began


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run the client on uvloop when it is installed (it is, with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


# -- one measurement ------------------------------------------------------------------------


def measure(
    ctx: Context,
    scenario: str,
    spec: ServerSpec,
    flow: Path,
    body: dict[str, Any],
    check: Check,
    sizes: Sizes,
    connections: int,
    streamed: bool = False,
) -> Result:
    """Start the server, check one answer, warm it up, then measure it under load."""
    client = "wrk" if ctx.use_wrk and not streamed else "python"
    what = f"{connections} streaming clients" if streamed else f"{connections} connections ({client})"
    log(f"{scenario}: {spec.label}, {what}")
    with serving(ctx, spec, flow) as server:
        log(f"  up in {server.startup_s:.2f} s; warm-up {sizes.warmup:g} s")
        check_once(server, body, check)
        accept = SSE_ACCEPT if streamed else JSON_ACCEPT
        if client == "wrk":
            wrk(ctx, server.url, body, connections, sizes.warmup)
        else:
            warm = {"seconds": sizes.warmup, "max_requests": 100_000}
            run_async(
                python_load(server.port, body, check, connections=min(connections, 64), accept=accept, **warm)
            )
        cpu_before = tree_cpu_seconds(server.process.pid)
        with RssSampler(server.process.pid) as memory:
            if client == "wrk":
                figures = wrk(ctx, server.url, body, connections, sizes.seconds)
                result = from_wrk(figures, scenario, spec, connections)
            else:
                if streamed:
                    limits = {"seconds": sizes.stream_time_limit, "max_requests": sizes.stream_requests}
                else:
                    limits = {"seconds": sizes.seconds, "max_requests": 10_000_000}
                load = python_load(server.port, body, check, connections=connections, accept=accept, **limits)
                tally, seconds = run_async(load)
                result = from_tally(tally, seconds, scenario, spec, connections, streamed)
        cpu = tree_cpu_seconds(server.process.pid) - cpu_before
        result.cpu_ms_per_request = cpu * 1000 / result.ok if result.ok else 0.0
        if spec.tracing:
            result.trace_dropped = spans_dropped(server.port)
        result.startup_s = server.startup_s
        result.workers = spec.workers
        result.worker_peak_mib = memory.worker_peak_mib()
        result.tree_peak_mib = memory.tree_peak_kib * 1024 / MIB
        result.processes = memory.processes()
        result.open_files_limit = open_files_limit(server.process.pid)
    log(
        f"  {result.ok} ok, {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms,"
        f" {result.errors} errors, worker peak RSS {result.worker_peak_mib:.1f} MiB,"
        f" CPU {result.cpu_ms_per_request:.3f} ms/request"
        + (f", {result.trace_dropped} spans dropped" if result.trace_dropped is not None else "")
    )
    return result


def from_wrk(figures: dict[str, Any], scenario: str, spec: ServerSpec, connections: int) -> Result:
    sockets = sum(int(figures[k]) for k in ("connect", "read", "write", "timeout"))
    return Result(
        scenario=scenario,
        server=spec.label,
        client="wrk",
        connections=connections,
        seconds=figures["duration_us"] / 1e6,
        requests=figures["requests"],
        ok=figures["requests"] - figures["non2xx"],
        non_2xx=figures["non2xx"],
        socket_errors=sockets,
        wrong=0,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
    )


def from_tally(
    tally: Tally, seconds: float, scenario: str, spec: ServerSpec, connections: int, streamed: bool
) -> Result:
    if tally.first_error:
        log(f"  first error: {tally.first_error}")
    return Result(
        scenario=scenario,
        server=spec.label,
        client="python",
        connections=connections,
        seconds=seconds,
        requests=tally.requests,
        ok=tally.ok,
        non_2xx=tally.non_2xx,
        socket_errors=tally.socket_errors,
        wrong=tally.wrong,
        p50_ms=percentile(tally.lasts, 50) * 1000,
        p99_ms=percentile(tally.lasts, 99) * 1000,
        first_p50_ms=percentile(tally.firsts, 50) * 1000 if streamed else None,
        first_p99_ms=percentile(tally.firsts, 99) * 1000 if streamed else None,
    )


# -- the scenarios --------------------------------------------------------------------------


Job = Callable[[], Result]


def repeated(jobs: list[Job], repeat: int) -> list[Result]:
    """Run every job ``repeat`` times, interleaved; keep each job's run with the median req/s."""
    runs: list[list[Result]] = [[] for _ in jobs]
    for round_ in range(1, repeat + 1):
        if repeat > 1:
            log(f"round {round_}/{repeat}")
        for job, done in zip(jobs, runs, strict=True):
            done.append(job())
    chosen = []
    for done in runs:
        median = sorted(done, key=lambda r: r.rate)[len(done) // 2]
        median.runs = [r.figures() for r in done]
        chosen.append(median)
    return chosen


def python_scenario(ctx: Context, sizes: Sizes, repeat: int, tracing: bool = False) -> list[Result]:
    c = sizes.python_connections

    def job(spec: ServerSpec) -> Job:
        return lambda: measure(ctx, "python", spec, PYTHON_FLOW, PYTHON_BODY, python_output_ok, sizes, c)

    return repeated([job(spec) for spec in (TRACED if tracing else (PF, FP1, FP2))], repeat)


def create_connections(ctx: Context, base_url: str) -> None:
    """``open_ai_connection`` pointing at the test LLM server, in both tools' scratch stores."""
    spec = ctx.scratch / "connection.yaml"
    spec.write_text(f"name: {CONNECTION_NAME}\ntype: open_ai\napi_key: {API_KEY}\nbase_url: {base_url}\n")
    run_quiet([str(FLOWPORT), "connection", "create", "--file", str(spec)], flowport_env(ctx))
    run_quiet([str(venv_pf()), "connection", "create", "--file", str(spec)], pf_env(ctx.pf_home))


def chat_scenarios(
    ctx: Context, sizes: Sizes, repeat: int, chat: bool, stream: bool, tracing: bool = False
) -> list[Result]:
    """Scenarios 2 and 3, against one test LLM server (200 ms, streamed chunks without pause)."""
    rows = []
    with llm_server_process(sizes.latency_ms, chunk_delay_ms=0) as base_url:
        create_connections(ctx, base_url)
        if chat:
            c = sizes.chat_connections

            def job(spec: ServerSpec) -> Job:
                return lambda: measure(ctx, "chat", spec, CHAT_FLOW, CHAT_BODY, chat_output_ok, sizes, c)

            rows += repeated([job(spec) for spec in (TRACED if tracing else (PF, FP1))], repeat)
        if stream:
            c = sizes.stream_clients
            rows += [
                measure(ctx, "stream", s, CHAT_FLOW, CHAT_BODY, chat_output_ok, sizes, c, streamed=True)
                for s in (PF, FP1)
            ]
    return rows


# -- output -------------------------------------------------------------------------------------


def print_rows(header: tuple[str, ...], cells: list[tuple[str, ...]], left: int) -> None:
    """A plain text table; the first ``left`` columns are left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        pairs = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs).rstrip())


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def spread(r: Result) -> str:
    rates = [run["req_per_s"] for run in r.runs]
    return f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else "-"


def print_results(rows: list[Result]) -> None:
    header = ("scenario", "server", "load", "conns", "seconds", "ok", "req/s", "range", "p50 ms", "p99 ms")
    header += ("first p50", "first p99", "CPU ms/req", "non-2xx", "socket", "wrong")
    print_rows(
        header,
        [
            (
                r.scenario,
                r.server,
                r.client,
                str(r.connections),
                f"{r.seconds:.1f}",
                str(r.ok),
                f"{r.rate:,.1f}",
                spread(r),
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.first_p50_ms),
                ms(r.first_p99_ms),
                f"{r.cpu_ms_per_request:.3f}",
                str(r.non_2xx),
                str(r.socket_errors),
                str(r.wrong),
            )
            for r in rows
        ],
        left=3,
    )
    print()
    print_rows(
        ("scenario", "server", "startup s", "workers", "peak RSS/worker MiB", "tree RSS MiB", "processes"),
        [
            (
                r.scenario,
                r.server,
                f"{r.startup_s:.2f}",
                str(r.workers),
                f"{r.worker_peak_mib:.1f}",
                f"{r.tree_peak_mib:.1f}",
                " ".join(f"{p['role']}:{p['peak_mib']:.0f}" for p in r.processes),
            )
            for r in rows
        ],
        left=2,
    )


def verdicts(rows: list[Result], sizes: Sizes) -> dict[str, Any]:
    """Print flowport against prompt flow per scenario and every target; return the figures."""
    by = {(r.scenario, r.server): r for r in rows}
    out: dict[str, Any] = {}
    pf, fp1, fp2 = PF.label, FP1.label, FP2.label
    if ("python", pf) in by:
        base = by["python", pf]
        one, two = by["python", fp1].rate / base.rate, by["python", fp2].rate / base.rate
        out["python"] = {"ratio_1_worker": one, "ratio_2_workers": two, "target": PYTHON_TARGET}
        print(
            f"python  req/s  flowport x1 {by['python', fp1].rate:,.0f} / pf {base.rate:,.0f} = {one:.1f}x"
            f"   target >= {PYTHON_TARGET:g}x: {verdict(one >= PYTHON_TARGET)}"
            f"   (flowport x2 workers: {two:.1f}x)"
        )
    if ("chat", pf) in by:
        base, fp = by["chat", pf], by["chat", fp1]
        ratio, bound = fp.rate / base.rate, sizes.latency_ms * P50_TARGET
        ideal = sizes.chat_connections / (sizes.latency_ms / 1000)
        out["chat"] = {
            "ratio": ratio,
            "target": CHAT_TARGET,
            "flowport_p50_ms": fp.p50_ms,
            "p50_bound_ms": bound,
        }
        print(
            f"chat    req/s  flowport {fp.rate:,.0f} / pf {base.rate:,.0f} = {ratio:.2f}x"
            f"   target >= {CHAT_TARGET:g}x: {verdict(ratio >= CHAT_TARGET)}   (LLM-bound ideal {ideal:,.0f})"
        )
        print(
            f"chat    p50    flowport {fp.p50_ms:.0f} ms, pf {base.p50_ms:.0f} ms"
            f"   target flowport <= {bound:g} ms: {verdict(fp.p50_ms <= bound)}"
        )
    if ("stream", pf) in by:
        base, fp = by["stream", pf], by["stream", fp1]
        complete = fp.errors == 0 and fp.ok == sizes.stream_requests
        out["stream"] = {
            "flowport_errors": fp.errors,
            "flowport_completed": fp.ok,
            "pf_errors": base.errors,
            "pf_completed": base.ok,
            "ratio": fp.rate / base.rate if base.rate else None,
        }
        print(
            f"stream  flowport {fp.ok}/{sizes.stream_requests} streams, {fp.errors} errors;"
            f" pf {base.ok}/{sizes.stream_requests}, {base.errors} errors"
            f"   target 0 flowport errors: {verdict(complete)}"
        )
    peaks = [
        max([r.worker_peak_mib, *(run["worker_peak_mib"] for run in r.runs)])
        for r in rows
        if r.server.startswith("flowport")
    ]
    if peaks:
        worst = max(peaks)
        out["rss"] = {"flowport_worker_peak_mib": worst, "target_mib": RSS_TARGET_MIB}
        print(
            f"memory  flowport peak RSS per worker {worst:.1f} MiB   target <= {RSS_TARGET_MIB:g} MiB:"
            f" {verdict(worst <= RSS_TARGET_MIB)}"
        )
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def tracing_verdicts(rows: list[Result]) -> dict[str, Any]:
    """Print each traced variant against the untraced server, per scenario; return the figures."""
    by = {(r.scenario, r.server): r for r in rows}
    out: dict[str, Any] = {}
    for scenario in ("python", "chat"):
        base = by.get((scenario, FP1.label))
        if base is None:
            continue
        base_p50s = [run["p50_ms"] for run in base.runs] or [base.p50_ms]
        noise = max(max(base_p50s) - min(base_p50s), 0.01 * median(base_p50s))
        for spec in (FP1_STORE, FP1_OTLP):
            traced = by.get((scenario, spec.label))
            if traced is None:
                continue
            p50s = [run["p50_ms"] for run in traced.runs] or [traced.p50_ms]
            ratio = traced.rate / base.rate if base.rate else 0.0
            p50_delta = median(p50s) - median(base_p50s)
            cpu = traced.cpu_ms_per_request / base.cpu_ms_per_request if base.cpu_ms_per_request else 0.0
            out[f"{scenario}_{spec.tracing}"] = {
                "req_per_s_ratio": ratio,
                "p50_ms": median(p50s),
                "untraced_p50_ms": median(base_p50s),
                "p50_delta_ms": p50_delta,
                "untraced_p50_spread_ms": noise,
                "cpu_ms_per_request": traced.cpu_ms_per_request,
                "untraced_cpu_ms_per_request": base.cpu_ms_per_request,
            }
            line = (
                f"{scenario:<7} {spec.tracing:<5}  req/s {traced.rate:,.0f} / {base.rate:,.0f} untraced"
                f" = {ratio:.3f}"
                f"   p50 {median(p50s):.1f} / {median(base_p50s):.1f} ms ({p50_delta:+.1f})"
                f"   CPU/req {traced.cpu_ms_per_request:.3f} / {base.cpu_ms_per_request:.3f} ms = {cpu:.2f}x"
            )
            if scenario == "python" and spec.tracing == "store":
                line += f"   target >= {TRACING_TARGET:.2f}: {verdict(ratio >= TRACING_TARGET)}"
            if scenario == "chat":
                line += (
                    f"   target |p50 change| <= {noise:.1f} ms (noise): {verdict(abs(p50_delta) <= noise)}"
                )
            print(line)
    return out


@contextlib.contextmanager
def otlp_receiver(scratch: Path) -> Iterator[str]:
    """``python -m flowport.testing.otlp`` in its own process; yields its URL, logs its span count."""
    port = free_port()
    command = [sys.executable, "-m", "flowport.testing.otlp", "--port", str(port)]
    with (scratch / "otlp-receiver.log").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/count", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    said = tail(scratch / "otlp-receiver.log")
                    raise RuntimeError(f"the OTLP receiver did not start:\n{said}") from None
                time.sleep(0.05)
        yield url
        with urllib.request.urlopen(f"{url}/count", timeout=5) as answer:
            log(f"OTLP receiver: {json.loads(answer.read())['spans']:,} spans received")
    finally:
        stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 s runs, 250 streaming clients")
    parser.add_argument("--only", choices=("python", "chat", "stream"), help="run one scenario")
    parser.add_argument("--seconds", type=float, help="measured seconds per server (scenarios 1, 2)")
    parser.add_argument("--warmup", type=float, help="seconds of untimed load before each measurement")
    parser.add_argument("--stream-clients", type=int, help="concurrent streaming clients (scenario 3)")
    parser.add_argument("--stream-requests", type=int, help="streamed requests in all (scenario 3)")
    parser.add_argument("--stream-time-limit", type=float, help="seconds to start streams in (scenario 3)")
    parser.add_argument(
        "--python-client", action="store_true", help="use the Python client even if wrk is there"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of scenarios 1 and 2, median kept (default 1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (server logs, flows)")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="scenarios 1 and 2: flowport untraced, tracing to the built-in store and over OTLP (no pf)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    overrides = {
        "seconds": args.seconds,
        "warmup": args.warmup,
        "stream_clients": args.stream_clients,
        "stream_requests": args.stream_requests,
        "stream_time_limit": args.stream_time_limit,
    }
    sizes = Sizes(**(asdict(sizes) | {k: v for k, v in overrides.items() if v is not None}))

    repeat = max(1, args.repeat)
    open_files = raise_open_files()
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    log(
        f"load generator: {'wrk (Python asyncio client for streams)' if use_wrk else 'Python asyncio client'}"
    )
    log(f"open-file limit: {open_files}; prompt flow venv: {ensure_venv().parent.parent}")
    scratch = Path(tempfile.mkdtemp(prefix="flowport-serve-"))
    source_before = src_fingerprint()
    tracing = args.tracing and args.only != "stream"
    try:
        with contextlib.ExitStack() as stack:
            otlp_url = stack.enter_context(otlp_receiver(scratch)) if tracing else ""
            ctx = Context(scratch, scratch / "flowport-home", scratch / "pf-home", use_wrk, otlp_url)
            rows = python_scenario(ctx, sizes, repeat, tracing) if args.only in (None, "python") else []
            if args.only in (None, "chat", "stream"):
                chat = args.only in (None, "chat")
                stream = args.only == "stream" or (args.only is None and not tracing)
                rows += chat_scenarios(ctx, sizes, repeat, chat, stream, tracing)
    finally:
        if args.keep:
            log(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    changed = source_changed(source_before)

    print()
    print_results(rows)
    print()
    figures = verdicts(rows, sizes)
    if tracing:
        figures["tracing"] = tracing_verdicts(rows)
    payload = {
        "benchmark": "serve",
        "machine": machine(),
        "versions": {"flowport": importlib.metadata.version("flowport"), "promptflow": PF_VERSION},
        "load_generator": "wrk" if use_wrk else "python",
        "wrk": wrk_version() if use_wrk else None,
        "open_files_limit": open_files,
        "flowport_env": FLOWPORT_LOAD_ENV,
        "sizes": asdict(sizes),
        "repeat": repeat,
        "tracing": tracing,
        "src_changed_during_run": changed,
        "rows": [r.summary() for r in rows],
        "verdicts": figures,
    }
    print(f"\nresults: {write_results('serve', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
