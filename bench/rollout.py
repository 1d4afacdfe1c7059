"""Blue/green rollout under load: no request may fail while deployments change behind an endpoint.

Starts ``flowport server`` (its own ``FLOWPORT_HOME`` in a scratch folder, SQLite), creates an
endpoint with deployment ``blue`` of the 3-node Python flow (inline ``model: {path: ...}``) at
100% traffic, then keeps 64 connections of constant load on ``/endpoints/rollout/score`` (key
auth) while it:

    creates green (same flow, other environment_variables: another revision)
    shifts traffic blue/green 100/0 -> 90/10 -> 50/50 -> 0/100
    scales blue 1 -> 3 -> 1 (PATCH {"set": ["instance_count=3"]})
    sets traffic green=100 and deletes blue

Each change waits for its operation (``GET /api/v1/operations/{id}``), then the load runs on for
``--hold`` seconds. Every request's start, latency, status and answering deployment
(``azureml-model-deployment``) is recorded and counted in the phase it started in. Prints, per
phase: requests, failed (non-200, transport error or a wrong body; target 0), p50, p99 and the
blue/green split; lists the failures; writes ``bench/results/rollout-<stamp>.json``; exits 1 when
a request failed (the scratch folder with the server and instance logs is kept then).

    .venv/bin/python bench/rollout.py                          # about a minute
    .venv/bin/python bench/rollout.py --quick                  # 2 s per phase: about 30 s
    .venv/bin/python bench/rollout.py --scale-with-traffic     # scale blue while it has 50%
    .venv/bin/python bench/rollout.py --rolling-update         # at 50/50, also replace blue's
                                                               # instances (new environment_variables)

The deployments raise ``max_concurrent_requests_per_instance`` to 100 so that the gateway's
admission limit (2 x 100 x instances) and the instance's own limit do not turn the 64 connections
into 429 answers; ``request_timeout_ms`` is 10000.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    FLOWPORT,
    PYTHON_FLOW,
    FlowportServer,
    LoadPool,
    LoadRecord,
    Target,
    failure_kind,
    machine,
    machine_cpu_seconds,
    percentile,
    python_output_ok,
    tree_cpu_seconds,
    write_results,
)

ENDPOINT = "rollout"
BODY = {"text": "hello world"}
REQUEST_SETTINGS = {"max_concurrent_requests_per_instance": 100, "request_timeout_ms": 10_000}
TAG_HEADER = "azureml-model-deployment"
SHOWN_FAILURES = 10


def log(message: str) -> None:
    print(f"[rollout] {message}", file=sys.stderr, flush=True)


@dataclass
class Phase:
    name: str
    began: float
    """``time.monotonic()`` when the change was sent."""
    applied: float = 0.0
    """When its operation had finished."""
    ended: float = 0.0
    operation: str = ""
    """The operation's kind and final status ("" for a phase without a change)."""
    error: Any = None

    @property
    def op_seconds(self) -> float:
        return self.applied - self.began


@dataclass
class PhaseRow:
    phase: str
    op_seconds: float
    operation: str
    requests: int
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    split: dict[str, int]
    failures: dict[str, int] = field(default_factory=dict)


def deployment_spec(flow: Path, color: str, instance_count: int = 1) -> dict[str, Any]:
    return {
        "model": {"path": str(flow)},
        "instance_count": instance_count,
        "environment_variables": {"BENCH_COLOR": color},
        "request_settings": REQUEST_SETTINGS,
    }


class Rollout:
    """The changes of the rollout, each run as a phase under the load."""

    def __init__(self, server: FlowportServer, flow: Path, hold: float) -> None:
        self.server = server
        self.flow = flow
        self.hold = hold
        self.phases: list[Phase] = []

    def phase(self, name: str, change: Callable[[], dict[str, Any]] | None = None) -> bool:
        """Run ``change`` (returns an operation), wait for it, hold the load; False if it failed."""
        log(f"phase: {name}")
        phase = Phase(name, time.monotonic())
        self.phases.append(phase)
        ok = True
        if change is not None:
            try:
                operation = self.server.wait(change())
                phase.operation = f"{operation['kind']} {operation['status']}"
                if operation["status"] != "Succeeded":
                    phase.error = operation.get("error")
                    ok = False
            except Exception as exc:  # the failure is the result: report it with the load so far
                phase.operation, phase.error, ok = "request failed", str(exc), False
            if not ok:
                log(f"  {name}: {phase.operation}: {phase.error}")
        phase.applied = time.monotonic()
        time.sleep(self.hold)
        phase.ended = time.monotonic()
        return ok

    def traffic(self, **shares: int) -> Callable[[], dict[str, Any]]:
        return lambda: self.server.set_traffic(ENDPOINT, shares)

    def scale(self, name: str, count: int) -> Callable[[], dict[str, Any]]:
        return lambda: self.server.update_deployment(ENDPOINT, name, f"instance_count={count}")

    def replace(self, name: str) -> Callable[[], dict[str, Any]]:
        """A change of the deployment's environment_variables: a new revision, instances replaced."""
        change = f"environment_variables.BENCH_COLOR={name}-2"
        return lambda: self.server.update_deployment(ENDPOINT, name, change)

    def run(self, warmup: float, scale_with_traffic: bool, rolling_update: bool) -> bool:
        server, flow = self.server, self.flow
        steps: list[tuple[str, Callable[[], dict[str, Any]] | None]] = [
            ("steady: blue=100", None),
            (
                "create green",
                lambda: server.create_deployment(ENDPOINT, "green", deployment_spec(flow, "green")),
            ),
            ("traffic blue=90 green=10", self.traffic(blue=90, green=10)),
            ("traffic blue=50 green=50", self.traffic(blue=50, green=50)),
        ]
        if rolling_update:
            steps.append(("replace blue (new env, rolling)", self.replace("blue")))
        scaling = [
            ("scale blue 1 -> 3", self.scale("blue", 3)),
            ("scale blue 3 -> 1", self.scale("blue", 1)),
        ]
        rest = [("traffic blue=0 green=100", self.traffic(blue=0, green=100))]
        steps += scaling + rest if scale_with_traffic else rest + scaling
        steps += [
            ("traffic green=100", self.traffic(green=100)),
            ("delete blue", lambda: server.delete_deployment(ENDPOINT, "blue")),
        ]
        warm = Phase("warm-up", time.monotonic())
        self.phases.append(warm)
        time.sleep(warmup)
        warm.applied = warm.began
        warm.ended = time.monotonic()
        return all(self.phase(name, change) for name, change in steps)


def python_flow_target(server: FlowportServer, endpoint: str) -> Target:
    """The load on ``endpoint`` (the 3-node Python flow), once its first answer is checked."""
    key = server.key(endpoint)
    payload = json.dumps(BODY).encode()
    status, expected = server.score(endpoint, key, payload)
    if status != 200 or not python_output_ok(BODY, json.loads(expected)):
        raise RuntimeError(f"the first answer is wrong: {status} {expected[:300]!r}")
    return Target(
        port=server.port,
        path=f"/endpoints/{endpoint}/score",
        body=payload,
        headers=(("Authorization", f"Bearer {key}"),),
        expected=expected,
        tag_header=TAG_HEADER,
    )


def rows_of(record: LoadRecord, phases: list[Phase]) -> list[PhaseRow]:
    """The requests of each phase (by start time; late ones count in the last phase), then totals."""
    buckets: list[list[int]] = [[] for _ in phases]
    bounds = [p.ended for p in phases[:-1]]
    order = sorted(range(record.requests), key=record.starts.__getitem__)
    phase = 0
    for i in order:
        while phase < len(bounds) and record.starts[i] >= bounds[phase]:
            phase += 1
        buckets[phase].append(i)
    rows = [
        row_of(record, p.name, p.op_seconds, p.operation, b) for p, b in zip(phases, buckets, strict=True)
    ]
    rows.append(row_of(record, "total", sum(p.op_seconds for p in phases), "", order))
    return rows


def row_of(record: LoadRecord, name: str, op_seconds: float, operation: str, indices: list[int]) -> PhaseRow:
    latencies = record.ok_latencies(indices)
    ok = len(latencies)
    split: dict[str, int] = {}
    for i in indices:
        tag = record.tags[i]
        label = record.tag_names[tag] if tag >= 0 else "-"
        split[label] = split.get(label, 0) + 1
    return PhaseRow(
        phase=name,
        op_seconds=op_seconds,
        operation=operation,
        requests=len(indices),
        ok=ok,
        failed=len(indices) - ok,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=max(latencies, default=0.0) * 1000,
        split=split,
        failures=record.failure_kinds(indices),
    )


def print_rows(rows: list[PhaseRow]) -> None:
    header = ("phase", "op s", "requests", "failed", "p50 ms", "p99 ms", "max ms", "blue/green %")
    cells = []
    for r in rows:
        total = sum(r.split.values()) or 1
        split = "/".join(f"{100 * r.split.get(name, 0) / total:.0f}" for name in ("blue", "green"))
        op = f"{r.op_seconds:.2f}" if r.operation or r.phase == "total" else "-"
        cells.append(
            (
                r.phase,
                op,
                str(r.requests),
                str(r.failed),
                f"{r.p50_ms:.1f}",
                f"{r.p99_ms:.1f}",
                f"{r.max_ms:.1f}",
                split,
            )
        )
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for i, row in enumerate(cells):
        if i == len(cells) - 1:
            print("  ".join("-" * w for w in widths))
        pairs = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in pairs))


def failure_list(record: LoadRecord, phases: list[Phase], began: float) -> list[dict[str, Any]]:
    """Every failed request: when (from the load's start and from its phase's start), what, where."""
    out = []
    for i in sorted(range(record.requests), key=record.starts.__getitem__):
        status = record.statuses[i]
        if 200 <= status < 300:
            continue
        start = record.starts[i]
        phase = next((p for p in phases if p.began <= start < p.ended), phases[-1])
        tag = record.tags[i]
        out.append(
            {
                "at_s": round(start - began, 4),
                "phase": phase.name,
                "into_phase_s": round(start - phase.began, 4),
                "latency_ms": round(record.latencies[i] * 1000, 2),
                "status": status,
                "kind": failure_kind(status, record.errors.get(i, "")),
                "deployment": record.tag_names[tag] if tag >= 0 else None,
                "error": record.errors.get(i, "")[:400],
            }
        )
    return out


def at(failure: dict[str, Any]) -> float:
    return float(failure["at_s"])


def log_findings(server: FlowportServer) -> dict[str, list[str]]:
    """Warnings, errors and runtime notes from the server log and every instance log."""
    words = ("error", "warning", "traceback", "exception", "flowport runtime:", "killed", "exited")
    found: dict[str, list[str]] = {}
    paths = [server.log_path, *sorted(server.instance_logs.rglob("*.log"))]
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        hits = [line[:300] for line in lines if any(w in line.lower() for w in words)]
        if hits:
            found[str(path.relative_to(server.home))] = hits[:40]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 s per phase (default 5 s)")
    parser.add_argument("--hold", type=float, help="seconds of load after each change has finished")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the first phase")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (64)")
    parser.add_argument("--client-processes", type=int, default=2, help="load processes sharing them (2)")
    parser.add_argument(
        "--scale-with-traffic",
        action="store_true",
        help="scale blue 1 -> 3 -> 1 at 50/50 traffic instead of after the shift to green",
    )
    parser.add_argument(
        "--rolling-update",
        action="store_true",
        help="at 50/50, also change blue's environment_variables (its instances are replaced one by one)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (logs) even if all passed"
    )
    args = parser.parse_args(argv)
    hold = args.hold if args.hold is not None else (2.0 if args.quick else 5.0)

    scratch = Path(tempfile.mkdtemp(prefix="flowport-rollout-"))
    flow = scratch / "flows" / PYTHON_FLOW.name
    shutil.copytree(PYTHON_FLOW, flow, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
    server = FlowportServer(scratch / "home", FLOWPORT)
    try:
        server.start()
        log(f"flowport server at {server.url} (home {server.home}), up in {server.startup_s:.2f} s")
        server.create_endpoint(ENDPOINT)
        operation = server.wait(server.create_deployment(ENDPOINT, "blue", deployment_spec(flow, "blue")))
        if operation["status"] != "Succeeded":
            raise RuntimeError(f"deployment blue failed: {operation}")
        server.wait(server.set_traffic(ENDPOINT, {"blue": 100}))
        target = python_flow_target(server, ENDPOINT)
        rollout = Rollout(server, flow, hold)
        log(
            f"load: {args.connections} connections in {args.client_processes} process(es);"
            f" {hold:g} s per phase"
        )
        assert server.process is not None
        root = server.process.pid
        with LoadPool(target, args.connections, args.client_processes) as pool:
            began = time.monotonic()
            cpu_before = machine_cpu_seconds(), tree_cpu_seconds(root)
            pool.start()
            try:
                completed = rollout.run(args.warmup, args.scale_with_traffic, args.rolling_update)
            finally:
                record = pool.stop()
            cpu_after = machine_cpu_seconds(), tree_cpu_seconds(root)
        server_cpu = (cpu_after[1] - cpu_before[1]) / record.seconds
        other_cpu = (cpu_after[0] - cpu_before[0]) / record.seconds - server_cpu - record.client_cpu
        phases = rollout.phases
        phases[-1].ended = max(phases[-1].ended, time.monotonic())
        rows = rows_of(record, phases)
        failures = failure_list(record, phases, began)
        findings = log_findings(server)
        final = server.ok("GET", f"/endpoints/{ENDPOINT}")
        deployments = server.ok("GET", f"/endpoints/{ENDPOINT}/deployments")
    finally:
        server.stop()

    print()
    print_rows(rows)
    total = rows[-1]
    print(
        f"\n{total.requests} requests in {record.seconds:.1f} s ({total.ok / record.seconds:,.0f} ok/s),"
        f" {total.failed} failed (target 0)\nCPU cores used meanwhile: server and instances"
        f" {server_cpu:.2f}, load processes {record.client_cpu:.2f}, other processes {other_cpu:.2f};"
        f" final traffic {final['traffic']}, deployments {[d['name'] for d in deployments]}"
    )
    if not completed:
        print("the rollout did not complete: " + "; ".join(f"{p.name}: {p.error}" for p in phases if p.error))
    if failures:
        kinds: dict[str, int] = {}
        for f in failures:
            label = f"{f['phase']}: {f['kind']}"
            kinds[label] = kinds.get(label, 0) + 1
        print("\nfailures by phase and kind:")
        for label, count in kinds.items():
            print(f"  {count:6d}  {label}")
        firsts = {(f["phase"], f["kind"]): f for f in reversed(failures)}
        shown = sorted({id(f): f for f in [*failures[:SHOWN_FAILURES], *firsts.values()]}.values(), key=at)
        print(f"\nthe first {SHOWN_FAILURES} failures and the first of each kind in each phase:")
        for f in shown:
            print(
                f"  t={f['at_s']:.3f}s (+{f['into_phase_s']:.3f}s into {f['phase']!r})"
                f" {f['latency_ms']:.1f} ms  {f['kind']}  deployment={f['deployment']}  {f['error'][:160]}"
            )
    if findings and (failures or not completed):
        print("\nlog lines that may explain them (server log, instance logs):")
        for path, lines in findings.items():
            print(f"  {path}:")
            for line in lines[:15]:
                print(f"    {line}")

    failed = bool(failures) or not completed
    payload_out = {
        "benchmark": "rollout",
        "machine": machine(),
        "versions": {"flowport": importlib.metadata.version("flowport")},
        "settings": {
            "connections": args.connections,
            "client_processes": args.client_processes,
            "hold_s": hold,
            "warmup_s": args.warmup,
            "scale_with_traffic": args.scale_with_traffic,
            "rolling_update": args.rolling_update,
            "request_settings": REQUEST_SETTINGS,
            "server_startup_s": server.startup_s,
        },
        "completed": completed,
        "phases": [asdict(p) | {"op_seconds": p.op_seconds} for p in phases],
        "rows": [asdict(r) for r in rows],
        "cpu_cores": {"server_tree": server_cpu, "load": record.client_cpu, "others": other_cpu},
        "failures": failures[:1000],
        "log_findings": findings,
        "scratch": str(scratch) if failed or args.keep else None,
    }
    print(f"\nresults: {write_results('rollout', payload_out)}")
    if failed or args.keep:
        print(f"scratch folder kept: {scratch} (server log: home/server.log, instances: home/runtime/logs)")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
