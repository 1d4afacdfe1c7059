"""Scoring-script benchmark: flowport against ``azmlinfsrv`` serving the same ``score.py``, same run.

The script is trivial (``init()`` sets a global, ``run(raw)`` parses the body and returns a
small JSON object), so what is measured is the server around it. Every way is its own
process (group) on 127.0.0.1, all started before the first measurement and left idle while
the others are measured:

    noop        a do-nothing HTTP/1.1 server (asyncio, this script with ``--noop-server``): the
                floor of the client and the loopback, for the p50 overhead
    azml x1     azmlinfsrv --entry_script score.py --port P   (azureml-inference-server-http's
                defaults: gunicorn, 1 sync worker, a new connection per request)
    azml x2     the same with --worker_count 2 (the process count of the deployment below)
    instance    python -m flowport.runtime.instance --port P (the deployment's instance process
                alone, its InstanceConfig on stdin: 1 process)
    deployment  flowport server: a scoring-script deployment (code_configuration, instance_count
                1) through the gateway with the endpoint's key (2 processes: server + instance)
    no-inline   with ``--compare-inline``: the instance with ``FLOWPORT_INLINE_FAST_TOOLS=0`` (a sync
                ``run()`` always in the thread pool, never on the event loop)

azureml-inference-server-http is installed into its own venv: ``bench/.venv-azmlinfsrv`` by
default, or the folder named by ``FLOWPORT_BENCH_AZML_VENV`` (populated there if it lacks it).

Load: bench/_common.LoadPool (raw HTTP/1.1 on asyncio; every answer's body must equal that way's
first answer, whose JSON is checked). Each way at ``c=1`` (one connection, one load process:
p50 and its overhead over ``noop``) and at ``c=32`` (``--client-processes`` load processes:
req/s). ``--rounds`` rounds (3), interleaved: each round measures every way at both
concurrencies for ``--seconds`` (3) each, after ``--warmup`` seconds (1) in the first round.
Reported per way: req/s (median of the rounds, and their range), p50/p99 over all rounds, the
server's CPU milliseconds per request (its process tree, from /proc: steadier than req/s on a
machine other work is using), and the load processes' CPU.
Targets: flowport req/s >= 5x azmlinfsrv's at c=32; p50 overhead over noop <= 1 ms at c=1.

    .venv/bin/python bench/scoring.py                 # about 2 minutes
    .venv/bin/python bench/scoring.py --rounds 1      # under a minute
    .venv/bin/python bench/scoring.py --skip-deployment --seconds 5
    .venv/bin/python bench/scoring.py --compare-inline   # also the instance with run() never inline
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    FLOWPORT,
    FlowportServer,
    LoadPool,
    LoadRecord,
    Target,
    free_port,
    machine,
    machine_cpu_seconds,
    percentile,
    tree_cpu_seconds,
    verdict,
    write_results,
)
from serve import raise_open_files, source_changed, src_fingerprint, stop, wait_healthy

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
VENV_ENV = "FLOWPORT_BENCH_AZML_VENV"
DEFAULT_VENV = BENCH_DIR / ".venv-azmlinfsrv"
PACKAGE = "azureml-inference-server-http"
REQUEST_SETTINGS = {"max_concurrent_requests_per_instance": 256, "request_timeout_ms": 60_000}
"""As bench/endpoint.py: admission limits must not turn load into 429/408 answers."""
RATE_TARGET = 5.0
OVERHEAD_TARGET_MS = 1.0
BODY = b'{"name": "flowport"}'
EXPECTED = {"greeting": "hello", "name": "flowport"}
SCORE_PY = """\
import json


def init():
    global greeting
    greeting = "hello"


def run(raw_data):
    data = json.loads(raw_data)
    return {"greeting": greeting, "name": data.get("name")}
"""
_NOOP_BODY = json.dumps(EXPECTED, separators=(",", ":")).encode()
NOOP_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_NOOP_BODY)}\r\n\r\n".encode()
    + _NOOP_BODY
)


def log(message: str) -> None:
    print(f"[scoring] {message}", file=sys.stderr, flush=True)


# -- azureml-inference-server-http in its own venv ------------------------------------------


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV).expanduser().resolve()


def installed_version(python: Path) -> str | None:
    if not python.is_file():
        return None
    code = f"import importlib.metadata as m; print(m.version({PACKAGE!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_venv() -> tuple[Path, str]:
    """Create and populate the venv unless it holds the package; its ``azmlinfsrv`` and version."""
    folder = venv_dir()
    python = folder / "bin" / "python"
    version = installed_version(python)
    if version is None:
        if not python.is_file():
            base = shutil.which("python3") or sys.executable
            log(f"creating {folder} with {base}")
            subprocess.run([base, "-m", "venv", str(folder)], check=True)
        log(f"installing {PACKAGE} into {folder}")
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PACKAGE]
        subprocess.run(pip, check=True)
        version = installed_version(python)
        if version is None:
            raise RuntimeError(f"{folder}: {PACKAGE} did not install")
    return folder / "bin" / "azmlinfsrv", version


# -- the do-nothing server ----------------------------------------------------------------------


class _Noop(asyncio.Protocol):
    """Answers every HTTP/1.1 request (a head and a ``content-length`` body) with NOOP_ANSWER."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"\ncontent-length:")
            length = int(head[at + 16 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(NOOP_ANSWER)


def noop_server(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Noop, HOST, port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the ways -----------------------------------------------------------------------------------


@dataclass
class Way:
    name: str
    label: str
    processes: int
    """Processes that serve requests (what ``azml x2`` matches)."""
    target: Target
    root: int
    """The pid whose process tree is the server (for its CPU)."""
    startup_s: float


@dataclass
class Measured:
    way: str
    connections: int
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    failed: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        ok = self.requests - self.failed
        return self.server_cpu_s / ok * 1000 if ok else 0.0

    def add(self, record: LoadRecord, server_cpu: float) -> None:
        self.rates.append(record.rate)
        self.latencies += record.ok_latencies()
        self.requests += record.requests
        self.failed += record.failed
        self.server_cpu_s += server_cpu
        self.client_cpu_s += record.cpu_seconds
        self.seconds += record.seconds
        for kind, count in record.failure_kinds().items():
            self.failures[kind] = self.failures.get(kind, 0) + count

    def summary(self) -> dict[str, Any]:
        figures = {"req_per_s": self.rate, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms}
        figures["server_cpu_ms_per_request"] = self.cpu_ms_per_request
        figures["client_cpu_cores"] = self.client_cpu_s / self.seconds if self.seconds else 0.0
        keep = ("way", "connections", "rates", "requests", "failed", "server_cpu_s", "seconds", "failures")
        return {k: getattr(self, k) for k in keep} | figures


def post(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=BODY,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def checked_target(name: str, port: int, path: str, headers: dict[str, str] | None = None) -> Target:
    """The first answer must be 200 with the script's JSON; every later answer must equal it."""
    status, body = post(port, path, headers)
    try:
        good = status == 200 and json.loads(body) == EXPECTED
    except ValueError:
        good = False
    if not good:
        raise RuntimeError(f"{name}: unexpected first answer {status} {body[:500]!r}")
    pairs = tuple((headers or {}).items())
    return Target(port=port, path=path, body=BODY, headers=pairs, expected=body)


@contextlib.contextmanager
def process_way(
    scratch: Path,
    name: str,
    command: list[str],
    probe: str,
    env: dict[str, str],
    stdin: bytes | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], int, float]]:
    """Start ``command`` (``{port}`` filled in) in its own session; yield it once ``probe`` answers."""
    port = free_port()
    log_path = scratch / f"{name.replace(' ', '-')}.log"
    command = [part.format(port=port) for part in command]
    began = time.monotonic()
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=scratch / "code",
            env=env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        if stdin is not None:
            assert process.stdin is not None
            process.stdin.write(stdin)
            process.stdin.close()
        wait_healthy(port, process, log_path, path=probe)
        yield process, port, time.monotonic() - began
    finally:
        stop(process)


def started_ways(stack: contextlib.ExitStack, scratch: Path, args: argparse.Namespace) -> list[Way]:
    ways: list[Way] = []
    base_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}

    def add(name: str, label: str, processes: int, command: list[str], probe: str, **kw: Any) -> None:
        env = kw.pop("env", base_env)
        process, port, startup = stack.enter_context(process_way(scratch, name, command, probe, env, **kw))
        target = checked_target(name, port, "/score")
        ways.append(Way(name, label, processes, target, process.pid, startup))
        log(f"{name}: up in {startup:.2f} s on port {port} (pid {process.pid})")

    add("noop", "do-nothing HTTP server", 1, [sys.executable, __file__, "--noop-server", "{port}"], "/")
    azmlinfsrv, version = ensure_venv()
    for workers in (1, 2):
        home = scratch / f"home-azml-{workers}"  # gunicorn's control socket lives under ~/.gunicorn
        home.mkdir()
        command = [str(azmlinfsrv), "--entry_script", "score.py", "--port", "{port}"]
        command += ["--worker_count", str(workers)] if workers > 1 else []
        label = f"azmlinfsrv {version}, {workers} worker" + ("s" if workers > 1 else " (default)")
        add(f"azml x{workers}", label, workers, command, "/", env={**base_env, "HOME": str(home)})
    config = {
        "source": str(scratch / "code"),
        "scoring_script": "score.py",
        "name": "score",
        "max_concurrent_requests": REQUEST_SETTINGS["max_concurrent_requests_per_instance"],
        "request_timeout_ms": REQUEST_SETTINGS["request_timeout_ms"],
    }
    env = {**base_env, "FLOWPORT_HOME": str(scratch / "instance-home")}
    command = [sys.executable, "-m", "flowport.runtime.instance", "--port", "{port}"]
    stdin = json.dumps(config).encode()
    add("instance", "flowport instance process", 1, command, "/health", env=env, stdin=stdin)
    if args.compare_inline:  # run() always in the thread pool, as before the inline policy applied
        env = {**env, "FLOWPORT_INLINE_FAST_TOOLS": "0"}
        label = "flowport instance, run() in its thread pool"
        add("no-inline", label, 1, command, "/health", env=env, stdin=stdin)
    if not args.skip_deployment:
        ways.append(deployment_way(stack, scratch))
    return ways


def deploy_script(fp: FlowportServer, scratch: Path) -> None:
    """Endpoint ``bench-script`` with deployment ``green``: ``scratch/code/score.py``, 1 instance,
    all traffic (raises RuntimeError with the operation when it fails)."""
    fp.create_endpoint("bench-script")
    spec = {
        "code_configuration": {"code": str(scratch / "code"), "scoring_script": "score.py"},
        "instance_count": 1,
        "request_settings": REQUEST_SETTINGS,
    }
    operation = fp.wait(fp.create_deployment("bench-script", "green", spec, all_traffic=True))
    if operation["status"] != "Succeeded":
        raise RuntimeError(f"deployment failed: {json.dumps(operation)[:2000]}")


def deployment_way(stack: contextlib.ExitStack, scratch: Path) -> Way:
    fp = stack.enter_context(FlowportServer(scratch / "server-home", FLOWPORT))
    began = time.monotonic()
    deploy_script(fp, scratch)
    key = fp.key("bench-script")
    headers = {"Authorization": f"Bearer {key}"}
    target = checked_target("deployment", fp.port, "/endpoints/bench-script/score", headers)
    assert fp.process is not None
    startup = time.monotonic() - began
    log(f"deployment: server up in {fp.startup_s:.2f} s, deployed and answering in {startup:.2f} s")
    return Way("deployment", "flowport server, scoring-script deployment", 2, target, fp.process.pid, startup)


# -- measuring --------------------------------------------------------------------------------


def measure_all(ways: list[Way], args: argparse.Namespace) -> tuple[dict[tuple[str, int], Measured], float]:
    """Every round: every way at c=1, then at c=32; the machine's other CPU use, in cores."""
    results: dict[tuple[str, int], Measured] = {}
    levels = [1, args.connections]
    other_cpu = 0.0
    wall = 0.0
    with contextlib.ExitStack() as pools:
        pool = {
            (way.name, c): pools.enter_context(
                LoadPool(way.target, c, 1 if c == 1 else args.client_processes)
            )
            for way in ways
            for c in levels
            if not (way.name == "noop" and c > 1)
        }
        for round_ in range(1, args.rounds + 1):
            log(f"round {round_}/{args.rounds}")
            for way in ways:
                for c in levels:
                    if (way.name, c) not in pool:
                        continue
                    load = pool[way.name, c]
                    if round_ == 1 and args.warmup > 0:
                        load.run(args.warmup)
                    machine_before, before = machine_cpu_seconds(), tree_cpu_seconds(way.root)
                    record = load.run(args.seconds)
                    server_cpu = tree_cpu_seconds(way.root) - before
                    other_cpu += machine_cpu_seconds() - machine_before - server_cpu - record.cpu_seconds
                    wall += record.seconds
                    row = results.setdefault((way.name, c), Measured(way.name, c))
                    row.add(record, server_cpu)
                    ok = record.ok
                    p50 = percentile(record.ok_latencies(), 50) * 1000
                    log(
                        f"  {way.name:10} c={c:<3} {record.rate:8,.0f} req/s  p50 {p50:6.2f} ms"
                        f"  server CPU {server_cpu / ok * 1000 if ok else 0:.3f} ms/req"
                        f"  {record.failed} failed"
                    )
    return results, max(0.0, other_cpu / wall) if wall else 0.0


# -- output -------------------------------------------------------------------------------------


def print_table(ways: list[Way], results: dict[tuple[str, int], Measured]) -> None:
    header = (
        "way",
        "procs",
        "conns",
        "req/s",
        "range",
        "p50 ms",
        "p99 ms",
        "CPU ms/req",
        "load CPU",
        "failed",
    )
    rows = []
    for way in ways:
        for (name, c), m in results.items():
            if name != way.name:
                continue
            rates = f"{min(m.rates):,.0f}-{max(m.rates):,.0f}" if len(m.rates) > 1 else "-"
            load = m.client_cpu_s / m.seconds if m.seconds else 0.0
            rows.append(
                (
                    f"{way.name}: {way.label}",
                    str(way.processes),
                    str(c),
                    f"{m.rate:,.0f}",
                    rates,
                    f"{m.p50_ms:.2f}",
                    f"{m.p99_ms:.2f}",
                    f"{m.cpu_ms_per_request:.3f}",
                    f"{load:.2f}",
                    str(m.failed),
                )
            )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print("CPU ms/req: the server's process tree; load CPU: cores used by the load processes (2 cores here)")


def verdicts(ways: list[Way], results: dict[tuple[str, int], Measured], c: int) -> dict[str, Any]:
    names = [w.name for w in ways]
    floor = results["noop", 1].p50_ms
    out: dict[str, Any] = {"noop_p50_ms": floor}
    for fp in ("instance", "deployment"):
        if fp not in names:
            continue
        mine = results[fp, c]
        overhead = results[fp, 1].p50_ms - floor
        figures: dict[str, Any] = {"p50_overhead_ms": overhead}
        for azml in ("azml x1", "azml x2"):
            theirs = results[azml, c]
            ratio = mine.rate / theirs.rate if theirs.rate else 0.0
            cpu = theirs.cpu_ms_per_request / mine.cpu_ms_per_request if mine.cpu_ms_per_request else 0.0
            figures[azml] = {"rate_ratio": ratio, "cpu_per_request_ratio": cpu}
            print(
                f"{fp:10} / {azml}  c={c}: {mine.rate:,.0f} / {theirs.rate:,.0f} req/s = {ratio:.1f}x"
                f"   target >= {RATE_TARGET:g}x: {verdict(ratio >= RATE_TARGET)}"
                f"   (CPU per request {cpu:.1f}x less)"
            )
        theirs_overhead = {azml: results[azml, 1].p50_ms - floor for azml in ("azml x1", "azml x2")}
        print(
            f"{fp:10} p50 overhead c=1: {results[fp, 1].p50_ms:.2f} - noop {floor:.2f} = {overhead:.2f} ms"
            f"   target <= {OVERHEAD_TARGET_MS:g} ms: {verdict(overhead <= OVERHEAD_TARGET_MS)}"
            f"   (azmlinfsrv x1: {theirs_overhead['azml x1']:.2f} ms)"
        )
        figures["met"] = overhead <= OVERHEAD_TARGET_MS and figures["azml x1"]["rate_ratio"] >= RATE_TARGET
        out[fp] = figures
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per way and level (3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed load before the first round (1)")
    parser.add_argument("--connections", type=int, default=32, help="connections for req/s (32)")
    parser.add_argument("--client-processes", type=int, default=2, help="load processes at c=32 (2)")
    parser.add_argument("--skip-deployment", action="store_true", help="no flowport server / deployment way")
    parser.add_argument(
        "--compare-inline", action="store_true", help="also the instance with FLOWPORT_INLINE_FAST_TOOLS=0"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (server logs)")
    parser.add_argument("--noop-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.noop_server:
        noop_server(args.noop_server)
        return 0

    raise_open_files()
    scratch = Path(tempfile.mkdtemp(prefix="flowport-scoring-"))
    (scratch / "code").mkdir()
    (scratch / "code" / "score.py").write_text(SCORE_PY)
    source_before = src_fingerprint()
    load_before = os.getloadavg()
    try:
        with contextlib.ExitStack() as stack:
            ways = started_ways(stack, scratch, args)
            results, other = measure_all(ways, args)
    finally:
        if args.keep:
            log(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    changed = source_changed(source_before, log)

    print()
    print_table(ways, results)
    print(
        f"other work on the machine meanwhile: {other:.2f} cores on average;"
        f" load average before: {load_before}"
    )
    print()
    figures = verdicts(ways, results, args.connections)
    payload = {
        "benchmark": "scoring",
        "machine": machine(),
        "load_average_before": load_before,
        "other_cpu_cores": other,
        "versions": {
            "flowport": importlib.metadata.version("flowport"),
            PACKAGE: installed_version(venv_dir() / "bin" / "python"),
        },
        "sizes": {k: v for k, v in vars(args).items() if k not in ("keep", "noop_server")},
        "request_settings": REQUEST_SETTINGS,
        "score_py": SCORE_PY,
        "ways": [{k: v for k, v in asdict(w).items() if k != "target"} for w in ways],
        "rows": [m.summary() for m in results.values()],
        "verdicts": figures,
        "src_changed_during_run": changed,
    }
    print(f"\nresults: {write_results('scoring', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
