"""Online endpoint benchmark: the whole path through ``flowport server`` against serving the flow alone.

The 3-node Python flow (``tests/flows/three_node_python``, body ``{"text": "hello world"}``) is
measured three ways, one after the other, each a fresh process on 127.0.0.1:

    (a) gateway   flowport server: key auth at the gateway, then the deployment's one instance
                  (endpoint ``bench-python``, deployment ``blue``, instance_count 1, traffic 100)
    (b) direct    flowport flow serve --source <flow> (1 worker), as bench/serve.py runs it
    (c) pf        pf flow serve --source <flow> --engine fastapi (prompt flow 1.18.5, its own venv)

Load: ``--connections`` (32) kept-alive connections from ``wrk`` when it is on the PATH (one
thread, bench/serve.py's script: the first answer of each way is checked, then every non-2xx
answer and socket error counts as an error), else, or with ``--python-client``, split over
``--client-processes`` (2) load processes (bench/_common.LoadPool: raw HTTP/1.1 on asyncio with
uvloop; every answer's body is compared with the first one); ``--warmup`` seconds (3) not
counted, then ``--seconds`` (10). wrk costs far less CPU than the Python client, and the load
shares the two cores with what it measures.
Reported: req/s of 200 answers, p50/p99, errors, and the CPU used meanwhile by the load
processes, by the server's process tree and by everything else on the machine (other
processes share the two cores), plus the tree's peak RSS. Target: (a) >= 15x (c).
``--chat`` adds the chat flow against the test LLM server (200 ms, its own process, whose CPU
counts under "other"), 64 connections, the same three ways (no target).
Exits 1 when a way could not be measured.

Also, on the flowport server (a):

1. Deploy to first answer: ``POST /endpoints/{e}/deployments?all_traffic=true`` of the Python
   flow on a fresh endpoint, then ``/score`` through the gateway every 10 ms until a 200;
   ``--startup-repeats`` (3) times, median. Target <= 2 s.
2. Failover: a 2-instance deployment under the same load; ``kill -9`` the pid of one instance
   (from ``GET .../deployments/{name}``: ``instances[].pid``), then poll that API until both
   instances are ready again, the killed one with a new pid. ``--kills`` (2) times, a different
   instance each time. Target: back to 2 ready in <= 2 s; failed requests ideally 0 (the
   gateway retries on the other instance when a connection fails).

The deployments raise ``max_concurrent_requests_per_instance`` to 256 and ``request_timeout_ms`` to
60000, as bench/serve.py raises ``flowport flow serve``'s limits, so that admission limits do not
turn load into 429/408 answers.

    .venv/bin/python bench/endpoint.py              # about 2 minutes (prompt flow's venv is made once)
    .venv/bin/python bench/endpoint.py --quick      # 5 s runs, 1 kill: about 1 minute
    .venv/bin/python bench/endpoint.py --skip-pf    # no prompt flow (no ratio against it)
    .venv/bin/python bench/endpoint.py --chat       # also the chat flow: about 3.5 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from _common import (
    API_KEY,
    CHAT_FLOW,
    CONNECTION_NAME,
    FLOWPORT,
    PYTHON_FLOW,
    FlowportServer,
    LoadPool,
    LoadRecord,
    Target,
    chat_output_ok,
    failure_kind,
    llm_server_process,
    machine,
    machine_cpu_seconds,
    percentile,
    python_output_ok,
    tree_cpu_seconds,
    verdict,
    write_results,
)
from _promptflow import PF_VERSION, ensure_venv, pf_env, venv_pf
from serve import (
    FP1,
    PF,
    Context,
    RssSampler,
    ServerSpec,
    flowport_env,
    raise_open_files,
    run_quiet,
    serving,
    source_changed,
    src_fingerprint,
    wrk,
    wrk_version,
)

REQUEST_SETTINGS = {"max_concurrent_requests_per_instance": 256, "request_timeout_ms": 60_000}
GATEWAY_TARGET = 15.0
"""(a) gateway path / (c) pf flow serve, req/s, Python flow."""
DEPLOY_TARGET_S = 2.0
RECOVERY_TARGET_S = 2.0
PROBE_INTERVAL = 0.01
LLM_LATENCY_MS = 200.0
MIB = 1024 * 1024
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Workload:
    name: str
    flow: Path
    body: dict[str, Any]
    check: Callable[[dict[str, Any], dict[str, Any]], bool]
    connections: int


PYTHON = Workload("python", PYTHON_FLOW, {"text": "hello world"}, python_output_ok, 32)
CHAT = Workload(
    "chat",
    CHAT_FLOW,
    {"question": "How do I deploy a flow to an endpoint?", "chat_history": []},
    chat_output_ok,
    64,
)


@dataclass(frozen=True)
class Sizes:
    seconds: float = 10.0
    warmup: float = 3.0
    client_processes: int = 2
    startup_repeats: int = 3
    kills: int = 2
    settle: float = 2.0
    """Seconds of load before the first kill."""
    after_kill: float = 3.0
    """Seconds of load after an instance is back, before the next kill or the end."""


DEFAULT = Sizes()
QUICK = Sizes(seconds=5.0, warmup=2.0, kills=1, settle=1.5, after_kill=2.0)


@dataclass
class Row:
    """One way of serving one workload under load."""

    way: str
    server: str
    workload: str
    connections: int
    client: str
    client_processes: int
    seconds: float
    requests: int
    ok: int
    errors: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu: float
    """Cores used by the load processes (1.0 = one core busy all along)."""
    server_cpu: float
    """Cores used by the server's process tree (gateway and instance for (a))."""
    other_cpu: float
    """Cores used by everything else on the machine meanwhile."""
    startup_s: float
    tree_peak_mib: float
    failures: dict[str, int] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[endpoint] {message}", file=sys.stderr, flush=True)


def deployment_spec(flow: Path, instance_count: int = 1) -> dict[str, Any]:
    return {
        "model": {"path": str(flow)},
        "instance_count": instance_count,
        "request_settings": REQUEST_SETTINGS,
    }


def flow_copy(scratch: Path, flow: Path) -> Path:
    target = scratch / "flows" / "server" / flow.name
    if not target.exists():
        shutil.copytree(flow, target, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
    return target


def measure(
    ctx: Context,
    way: str,
    label: str,
    workload: Workload,
    target: Target,
    root: int,
    startup_s: float,
    sizes: Sizes,
) -> Row:
    """Warm up, then one timed run; CPU of the load, the server tree and the rest of the machine."""
    client = "wrk, 1 thread" if ctx.use_wrk else f"{sizes.client_processes} Python load process(es)"
    log(
        f"{workload.name}: {label}: {workload.connections} connections from {client},"
        f" warm-up {sizes.warmup:g} s, {sizes.seconds:g} s measured"
    )
    run = _wrk_run if ctx.use_wrk else _python_run
    with run(ctx, target, workload, sizes) as load, RssSampler(root) as memory:
        machine_before, server_before = machine_cpu_seconds(), tree_cpu_seconds(root)
        figures = load()
        machine_after, server_after = machine_cpu_seconds(), tree_cpu_seconds(root)
    seconds = figures["seconds"]
    server_cpu = (server_after - server_before) / seconds
    other = (machine_after - machine_before) / seconds - server_cpu - figures["client_cpu"]
    row = Row(
        way=way,
        server=label,
        workload=workload.name,
        connections=workload.connections,
        server_cpu=server_cpu,
        other_cpu=max(0.0, other),
        startup_s=startup_s,
        tree_peak_mib=memory.tree_peak_kib * 1024 / MIB,
        **{k: v for k, v in figures.items() if k != "first_failure"},
    )
    log(
        f"  {row.req_per_s:,.0f} req/s, p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms,"
        f" {row.errors} errors;"
        f" CPU cores: load {row.client_cpu:.2f}, server {row.server_cpu:.2f}, others {row.other_cpu:.2f}"
    )
    if row.errors:
        log(f"  failures {row.failures}; first: {figures['first_failure'][:300]}")
    return row


Timed = Callable[[], dict[str, Any]]
"""Runs the measured load and returns its figures (Row's fields, plus ``first_failure``)."""


@contextlib.contextmanager
def _python_run(ctx: Context, target: Target, workload: Workload, sizes: Sizes) -> Iterator[Timed]:
    """The bench's own asyncio client in load processes; every answer's body is checked."""
    with LoadPool(target, workload.connections, sizes.client_processes) as pool:
        pool.run(sizes.warmup)

        def timed() -> dict[str, Any]:
            record = pool.run(sizes.seconds)
            latencies = record.ok_latencies()
            return {
                "client": "python",
                "client_processes": record.processes,
                "seconds": record.seconds,
                "requests": record.requests,
                "ok": record.ok,
                "errors": record.failed,
                "req_per_s": record.rate,
                "p50_ms": percentile(latencies, 50) * 1000,
                "p99_ms": percentile(latencies, 99) * 1000,
                "client_cpu": record.client_cpu,
                "failures": record.failure_kinds(),
                "first_failure": next(iter(record.errors.values()), ""),
            }

        yield timed


@contextlib.contextmanager
def _wrk_run(ctx: Context, target: Target, workload: Workload, sizes: Sizes) -> Iterator[Timed]:
    """wrk with one thread (bench/serve.py's script); the first answer was checked, then non-2xx count."""
    url = f"http://{target.host}:{target.port}{target.path}"
    wrk(ctx, url, workload.body, workload.connections, sizes.warmup, target.headers)

    def timed() -> dict[str, Any]:
        before = _children_cpu()
        figures = wrk(ctx, url, workload.body, workload.connections, sizes.seconds, target.headers)
        seconds = figures["duration_us"] / 1e6
        sockets = {k: int(figures[k]) for k in ("connect", "read", "write", "timeout") if figures[k]}
        failures = {**({"non-2xx": figures["non2xx"]} if figures["non2xx"] else {}), **sockets}
        errors = sum(failures.values())
        return {
            "client": "wrk",
            "client_processes": 1,
            "seconds": seconds,
            "requests": figures["requests"],
            "ok": figures["requests"] - figures["non2xx"],
            "errors": errors,
            "req_per_s": (figures["requests"] - figures["non2xx"]) / seconds,
            "p50_ms": figures["p50_us"] / 1000,
            "p99_ms": figures["p99_us"] / 1000,
            "client_cpu": (_children_cpu() - before) / seconds,
            "failures": failures,
            "first_failure": json.dumps(failures),
        }

    yield timed


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}, method="POST"
    )
    try:
        with _LOOPBACK.open(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def checked(workload: Workload, status: int, body: bytes, who: str) -> bytes:
    """The first answer must be a 200 with the right outputs; its bytes are what every answer must be."""
    try:
        good = status == 200 and workload.check(workload.body, json.loads(body))
    except ValueError:
        good = False
    if not good:
        raise RuntimeError(f"{who}: unexpected first answer {status} {body[:500]!r}")
    return body


# -- (a) the gateway path, and what only the server does -----------------------------------------


@contextlib.contextmanager
def endpoint_with(
    fp: FlowportServer, name: str, flow: Path, instance_count: int, workload: Workload, **endpoint: Any
) -> Iterator[Target]:
    """An endpoint (``endpoint``: its other fields, e.g. ``compute``) with deployment blue (100% traffic);
    yields the load target; deletes it after."""
    fp.create_endpoint(name, **endpoint)
    operation = fp.wait(fp.create_deployment(name, "blue", deployment_spec(flow, instance_count)))
    if operation["status"] != "Succeeded":
        raise RuntimeError(f"deployment {name}/blue failed: {json.dumps(operation)[:2000]}")
    fp.wait(fp.set_traffic(name, {"blue": 100}))
    key = fp.key(name)
    body = json.dumps(workload.body).encode()
    expected = checked(workload, *fp.score(name, key, body), f"gateway {name}")
    try:
        yield Target(
            port=fp.port,
            path=f"/endpoints/{name}/score",
            body=body,
            headers=(("Authorization", f"Bearer {key}"),),
            expected=expected,
        )
    finally:
        fp.wait(fp.ok("DELETE", f"/endpoints/{name}")["operation"])


def deploy_to_first_answer(fp: FlowportServer, flow: Path, repeats: int) -> dict[str, Any]:
    """Seconds from POST .../deployments (all_traffic) to the gateway's first 200, on new endpoints."""
    body = json.dumps(PYTHON.body).encode()
    runs = []
    for index in range(1, repeats + 1):
        name = f"startup-{index}"
        fp.create_endpoint(name)
        key = fp.key(name)
        began = time.monotonic()
        operation = fp.create_deployment(name, "blue", deployment_spec(flow), all_traffic=True)
        posted = time.monotonic() - began
        polls = 0
        while True:
            status, answer = fp.score(name, key, body)
            polls += 1
            if status == 200:
                break
            if time.monotonic() - began > 120:
                raise RuntimeError(f"{name}: no 200 within 120 s (last {status} {answer[:300]!r})")
            time.sleep(PROBE_INTERVAL)
        first = time.monotonic() - began
        checked(PYTHON, status, answer, f"gateway {name}")
        operation = fp.wait(operation)
        runs.append(
            {"seconds": first, "post_seconds": posted, "polls": polls, "operation": operation["status"]}
        )
        log(f"  deploy -> first 200: {first:.3f} s (POST answered in {posted:.3f} s, {polls} polls)")
        fp.wait(fp.ok("DELETE", f"/endpoints/{name}")["operation"])
    median = statistics.median(r["seconds"] for r in runs)
    return {"runs": runs, "median_s": median, "target_s": DEPLOY_TARGET_S, "met": median <= DEPLOY_TARGET_S}


def failover(fp: FlowportServer, flow: Path, sizes: Sizes) -> dict[str, Any]:
    """kill -9 one instance of a 2-instance deployment under load: time back to 2 ready, failures."""
    name = "failover"
    log(f"failover: 2 instances, {PYTHON.connections} connections, {sizes.kills} kill(s)")
    kills: list[dict[str, Any]] = []
    with (
        endpoint_with(fp, name, flow, 2, PYTHON) as target,
        LoadPool(target, PYTHON.connections, sizes.client_processes) as pool,
    ):
        began = time.monotonic()
        pool.start()
        try:
            time.sleep(sizes.settle)
            for index in range(sizes.kills):
                kills.append(kill_one(fp, name, index))
                time.sleep(sizes.after_kill)
        finally:
            record = pool.stop()
    ended = time.monotonic()
    for number, kill in enumerate(kills):
        until = kills[number + 1]["killed_at"] if number + 1 < len(kills) else ended
        window = [i for i, start in enumerate(record.starts) if kill["killed_at"] <= start < until]
        kill["requests_after"] = len(window)
        kill["failed_after"] = sum(1 for i in window if not 200 <= record.statuses[i] < 300)
        kill["killed_at"] -= began
    recoveries = [k["recovery_s"] for k in kills if k["recovery_s"] is not None]
    worst = max(recoveries) if len(recoveries) == len(kills) and kills else None
    result = {
        "kills": kills,
        "requests": record.requests,
        "failed": record.failed,
        "failures": record.failure_kinds(),
        "failure_samples": failure_samples(record, began),
        "req_per_s": record.rate,
        "worst_recovery_s": worst,
        "target_s": RECOVERY_TARGET_S,
        "met": worst is not None and worst <= RECOVERY_TARGET_S,
    }
    log(f"  {record.requests} requests, {record.failed} failed {result['failures'] or ''}")
    return result


def kill_one(fp: FlowportServer, name: str, index: int) -> dict[str, Any]:
    instances = fp.deployment(name, "blue")["instances"]
    ready = [i for i in instances if i["ready"] and i["pid"]]
    if len(ready) < 2:
        raise RuntimeError(f"expected 2 ready instances before a kill, got {instances}")
    victim = ready[index % len(ready)]
    killed_at = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    seen_down = None
    recovered = None
    not_yet = 0.0
    """When the last poll that still saw the instance down was sent: recovery came after it."""
    polls = 0
    deadline = killed_at + 60
    while time.monotonic() < deadline:
        sent = time.monotonic() - killed_at
        instances = fp.deployment(name, "blue")["instances"]
        polls += 1
        now = time.monotonic() - killed_at
        mine = next((i for i in instances if i["id"] == victim["id"]), None)
        if seen_down is None and (mine is None or not mine["ready"]):
            seen_down = now
        back = mine is not None and mine["ready"] and mine["pid"] not in (None, victim["pid"])
        if back and sum(1 for i in instances if i["ready"]) == 2:
            recovered = now
            break
        not_yet = sent
        time.sleep(PROBE_INTERVAL)
    outcome = f"{recovered:.3f} s (after {not_yet:.3f} s)" if recovered is not None else "not within 60 s"
    log(
        f"  killed instance {victim['id']} (pid {victim['pid']}):"
        f" back to 2 ready in {outcome}; {polls} polls of the API, {1000 * now / polls:.0f} ms each"
    )
    return {
        "instance": victim["id"],
        "pid": victim["pid"],
        "killed_at": killed_at,
        "seen_not_ready_s": seen_down,
        "recovery_s": recovered,
        "recovered_after_s": not_yet,
        "polls": polls,
        "instances_after": instances,
    }


def failure_samples(record: LoadRecord, began: float, limit: int = 20) -> list[dict[str, Any]]:
    out = []
    for i in sorted(record.errors, key=record.starts.__getitem__)[:limit]:
        status = record.statuses[i]
        out.append(
            {
                "at_s": round(record.starts[i] - began, 4),
                "latency_ms": round(record.latencies[i] * 1000, 2),
                "kind": failure_kind(status, record.errors[i]),
                "error": record.errors[i][:300],
            }
        )
    return out


def gateway_way(
    ctx: Context, workloads: list[Workload], sizes: Sizes, llm_url: str | None, extras: bool
) -> tuple[list[Row], dict[str, Any]]:
    scratch = ctx.scratch
    rows: list[Row] = []
    found: dict[str, Any] = {}
    with FlowportServer(scratch / "server-home", FLOWPORT) as fp:
        log(f"flowport server up in {fp.startup_s:.2f} s at {fp.url} (home {fp.home})")
        if llm_url is not None:
            connection = {"type": "open_ai", "api_key": API_KEY, "base_url": llm_url}
            fp.ok("PUT", f"/connections/{CONNECTION_NAME}", connection)
        for workload in workloads:
            flow = flow_copy(scratch, workload.flow)
            with endpoint_with(fp, f"bench-{workload.name}", flow, 1, workload) as target:
                assert fp.process is not None
                label = "flowport server (gateway)"
                rows.append(measure(ctx, "a", label, workload, target, fp.process.pid, fp.startup_s, sizes))
        if extras:
            flow = flow_copy(scratch, PYTHON.flow)
            log(f"deploy -> first 200 through the gateway, {sizes.startup_repeats} times")
            found["deploy_to_first_200"] = deploy_to_first_answer(fp, flow, sizes.startup_repeats)
            found["failover"] = failover(fp, flow, sizes)
        found["server_log_tail"] = fp.log_tail(40).splitlines()
    return rows, found


# -- (b) and (c): one flow served alone ------------------------------------------------------------


def alone_way(ctx: Context, spec: ServerSpec, way: str, label: str, workload: Workload, sizes: Sizes) -> Row:
    with serving(ctx, spec, workload.flow) as server:
        body = json.dumps(workload.body).encode()
        expected = checked(workload, *post(server.url, body), label)
        target = Target(port=server.port, path="/score", body=body, expected=expected)
        return measure(ctx, way, label, workload, target, server.process.pid, server.startup_s, sizes)


def create_connections(ctx: Context, base_url: str, with_pf: bool) -> None:
    """``open_ai_connection`` pointing at the test LLM server, in the scratch stores."""
    spec = ctx.scratch / "connection.yaml"
    spec.write_text(f"name: {CONNECTION_NAME}\ntype: open_ai\napi_key: {API_KEY}\nbase_url: {base_url}\n")
    run_quiet([str(FLOWPORT), "connection", "create", "--file", str(spec)], flowport_env(ctx))
    if with_pf:
        run_quiet([str(venv_pf()), "connection", "create", "--file", str(spec)], pf_env(ctx.pf_home))


# -- output ------------------------------------------------------------------------------------------


def print_rows(rows: list[Row]) -> None:
    header = ("flow", "way", "conns", "req/s", "p50 ms", "p99 ms", "errors", "load CPU", "server CPU")
    header += ("other CPU", "startup s", "peak RSS MiB")
    cells = [
        (
            r.workload,
            f"({r.way}) {r.server}",
            str(r.connections),
            f"{r.req_per_s:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            str(r.errors),
            f"{r.client_cpu:.2f}",
            f"{r.server_cpu:.2f}",
            f"{r.other_cpu:.2f}",
            f"{r.startup_s:.2f}",
            f"{r.tree_peak_mib:.0f}",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print(
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(
        "CPU columns: cores used during the measured run (2 on this machine); other = the rest of the machine"
    )


def summary(rows: list[Row], found: dict[str, Any], skip_pf: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by = {(r.workload, r.way): r for r in rows}
    for workload in dict.fromkeys(r.workload for r in rows):
        gateway, direct, pf = by.get((workload, "a")), by.get((workload, "b")), by.get((workload, "c"))
        if gateway is None:
            continue
        figures: dict[str, Any] = {}
        if direct is not None and direct.req_per_s:
            figures["gateway_vs_direct"] = gateway.req_per_s / direct.req_per_s
            print(
                f"{workload:6}  gateway / flowport flow serve ="
                f" {gateway.req_per_s:,.0f} / {direct.req_per_s:,.0f}"
                f" = {figures['gateway_vs_direct']:.2f}x"
                f"  (p50 {gateway.p50_ms:.1f} vs {direct.p50_ms:.1f} ms)"
            )
        if pf is not None and pf.req_per_s:
            figures["gateway_vs_pf"] = gateway.req_per_s / pf.req_per_s
            line = (
                f"{workload:6}  gateway / pf flow serve       ="
                f" {gateway.req_per_s:,.0f} / {pf.req_per_s:,.0f}"
                f" = {figures['gateway_vs_pf']:.1f}x"
            )
            if workload == "python":
                met = figures["gateway_vs_pf"] >= GATEWAY_TARGET
                figures["target"], figures["met"] = GATEWAY_TARGET, met
                line += f"   target >= {GATEWAY_TARGET:g}x: {verdict(met)}"
            print(line)
        elif workload == "python":
            print(
                f"{workload:6}  gateway / pf flow serve: not measured (--skip-pf);"
                f" target >= {GATEWAY_TARGET:g}x"
            )
        out[workload] = figures
    deploy = found.get("deploy_to_first_200")
    if deploy:
        runs = ", ".join(f"{r['seconds']:.2f}" for r in deploy["runs"])
        print(
            f"deploy  POST deployments -> first 200 via gateway: median {deploy['median_s']:.2f} s ({runs})"
            f"   target <= {DEPLOY_TARGET_S:g} s: {verdict(deploy['met'])}"
        )
    fail = found.get("failover")
    if fail:
        times = ", ".join(
            f"{k['recovery_s']:.2f} (after {k['recovered_after_s']:.2f})"
            if k["recovery_s"] is not None
            else "never"
            for k in fail["kills"]
        )
        worst = fail["worst_recovery_s"]
        shown = f"{worst:.2f} s" if worst is not None else "never"
        print(
            f"kill -9 one of 2 instances: back to 2 ready in {shown} worst ({times})"
            f"   target <= {RECOVERY_TARGET_S:g} s: {verdict(fail['met'])}"
        )
        print(
            f"kill -9 failed requests: {fail['failed']} of {fail['requests']}"
            f" {fail['failures'] or ''}   ideal 0: {verdict(fail['failed'] == 0)}"
        )
        for sample in fail["failure_samples"][:10]:
            print(
                f"    t={sample['at_s']:.3f}s {sample['latency_ms']:.1f} ms {sample['kind']}:"
                f" {sample['error'][:160]}"
            )
    if skip_pf:
        print("prompt flow skipped (--skip-pf)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s runs, 2 s warm-up, 1 kill")
    parser.add_argument("--skip-pf", action="store_true", help="do not measure pf flow serve")
    parser.add_argument("--chat", action="store_true", help="also the chat flow against the test LLM server")
    parser.add_argument("--seconds", type=float, help="measured seconds per way")
    parser.add_argument("--warmup", type=float, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, help="connections for the Python flow (32)")
    parser.add_argument("--client-processes", type=int, help="load processes (2)")
    parser.add_argument("--startup-repeats", type=int, help="deploy -> first 200 repeats (3)")
    parser.add_argument("--kills", type=int, help="instances killed in the failover test (2)")
    parser.add_argument(
        "--python-client", action="store_true", help="load with the Python client even when wrk is present"
    )
    parser.add_argument("--only-gateway", action="store_true", help="measure (a) and its extras only")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (server and instance logs)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    overrides = {
        "seconds": args.seconds,
        "warmup": args.warmup,
        "client_processes": args.client_processes,
        "startup_repeats": args.startup_repeats,
        "kills": args.kills,
    }
    sizes = Sizes(**(asdict(sizes) | {k: v for k, v in overrides.items() if v is not None}))
    python = PYTHON if args.connections is None else replace(PYTHON, connections=args.connections)
    workloads = [python, CHAT] if args.chat else [python]
    skip_pf = args.skip_pf or args.only_gateway

    open_files = raise_open_files()
    if not skip_pf:
        pf_python = ensure_venv()
        log(f"prompt flow venv: {pf_python.parent.parent}")
    scratch = Path(tempfile.mkdtemp(prefix="flowport-endpoint-"))
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    log(f"load generator: {'wrk' if use_wrk else 'Python asyncio client'} (the failover test: Python client)")
    ctx = Context(scratch, scratch / "flowport-home", scratch / "pf-home", use_wrk)
    source_before = src_fingerprint()
    load_before = os.getloadavg()
    rows: list[Row] = []
    problems: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            llm_url = stack.enter_context(llm_server_process(LLM_LATENCY_MS)) if args.chat else None
            if llm_url is not None:
                create_connections(ctx, llm_url, with_pf=not skip_pf)
            gateway_rows, found = gateway_way(ctx, workloads, sizes, llm_url, extras=True)
            rows += gateway_rows
            for workload in workloads:
                ways = [] if args.only_gateway else [(FP1, "b", "flowport flow serve")]
                ways += [] if skip_pf else [(PF, "c", f"pf flow serve {PF_VERSION}")]
                for spec, way, label in ways:
                    try:
                        rows.append(alone_way(ctx, spec, way, label, workload, sizes))
                    except Exception as exc:  # report the other ways all the same
                        log(f"{workload.name}: {label} failed: {exc}")
                        problems.append(f"{workload.name}: {label}: {exc}")
    finally:
        if args.keep:
            log(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    changed = source_changed(source_before, log)

    print()
    print_rows(rows)
    print()
    figures = summary(rows, found, skip_pf)
    payload = {
        "benchmark": "endpoint",
        "machine": machine(),
        "load_average_before": load_before,
        "versions": {"flowport": importlib.metadata.version("flowport"), "promptflow": PF_VERSION},
        "open_files_limit": open_files,
        "sizes": asdict(sizes),
        "request_settings": REQUEST_SETTINGS,
        "skip_pf": skip_pf,
        "load_generator": "wrk" if ctx.use_wrk else "python",
        "wrk": wrk_version() if ctx.use_wrk else None,
        "src_changed_during_run": changed,
        "rows": [asdict(r) for r in rows],
        "ratios": figures,
        "problems": problems,
        **found,
    }
    for problem in problems:
        print(f"NOT MEASURED: {problem[:2000]}")
    print(f"\nresults: {write_results('endpoint', payload)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
