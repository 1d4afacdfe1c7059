"""Scale-out benchmark: the Ray runtime, the local runtime and a plain Ray Serve app, in one run.

A Ray cluster of two nodes (a head and a second node, each ``ray start --block`` on this machine,
one CPU each: tests/test_ray_runtime.py's ``RayCluster``) and one ``flowport server`` with a
``ray`` compute registered. The 3-node Python flow (``tests/flows/three_node_python``, body
``{"text": "hello world"}``) is served three ways, one instance/replica each:

    local       an endpoint on the local compute: gateway (key auth) -> instance over a Unix socket
    ray         an endpoint with ``compute: azureml:lab``: gateway -> instance server in a Ray actor
    ray-serve   a plain Ray Serve app: ``@serve.deployment`` whose HTTP handler runs the same flow
                through flowport's executor (``load_executor(flow).run_line``), called through
                Ray Serve's HTTP proxy (head node only, no auth)

Load: bench/_common.LoadPool (raw HTTP/1.1 on asyncio, every answer's body compared with the
first, checked one), split over ``--client-processes`` (2), at 32 and 256 connections; each
measurement is bench/endpoint.py's ``measure`` (``--warmup`` s not counted, then ``--seconds``).
The three ways are interleaved: for each connection count, local, ray, ray-serve, and the whole
round ``--rounds`` times; the median round of each way is kept. flowport's deployments and the
Serve deployment allow 256 requests in flight per instance/replica.

Autoscaling reaction: an endpoint (local, then Ray) whose deployment has ``scale_settings: type:
target_utilization`` (min 1, max 3, target 50 % of 8 requests per instance, polling_interval 1 s,
cool-down 60 s). 32 connections of load start; the deployment is polled (``GET
.../deployments/blue``, every 50 ms) until a second instance is ready. Targets: <= 5 s local,
<= 15 s Ray (Azure's documented autoscale reacts in minutes).

Ray Serve is not in flowport's dev extras; install it into the venv first:

    .venv/bin/pip install 'ray[serve]==<the installed ray version>'
    .venv/bin/python bench/scale.py                 # about 3 minutes on 2 cores
    .venv/bin/python bench/scale.py --quick         # 4 s runs, one round
    FLOWPORT_TRACING=off .venv/bin/python bench/scale.py   # no spans (servers and Ray nodes inherit it)

Tracing is as configured (on by default): local instances write every request's spans to the
server's built-in trace store, Ray instances do not have that store yet (docs/ray.md), which
weighs on the local figures; ``FLOWPORT_TRACING=off`` compares the bare request paths.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from _common import REPO, FlowportServer, LoadPool, Target, free_port, machine, verdict, write_results
from endpoint import (
    FLOWPORT,
    PYTHON,
    REQUEST_SETTINGS,
    Row,
    Sizes,
    checked,
    endpoint_with,
    flow_copy,
    measure,
    post,
    print_rows,
)
from serve import Context, raise_open_files

sys.path.insert(0, str(REPO))
from tests.test_ray_runtime import RayCluster  # the tests' two-node cluster

CONNECTIONS = (32, 256)
LOCAL_TARGET_S = 5.0
RAY_TARGET_S = 15.0
SCALE_SETTINGS = {
    "type": "target_utilization",
    "min_instances": 1,
    "max_instances": 3,
    "target_utilization_percentage": 50,
    "polling_interval": 1,
    "cooldown_seconds": 60,
}
SCALE_REQUESTS = {"max_concurrent_requests_per_instance": 8, "request_timeout_ms": 60_000}
WAYS = ("local", "ray", "ray-serve")


@dataclass(frozen=True)
class Way:
    name: str
    label: str
    target: Target
    root: int
    """The process tree whose CPU is the row's server CPU."""
    ready_s: float
    """Seconds from create to the first right answer."""


def log(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


# -- the three ways ------------------------------------------------------------------------------


@contextlib.contextmanager
def flowport_way(fp: FlowportServer, name: str, flow: Path, label: str, **endpoint: Any) -> Iterator[Way]:
    began = time.monotonic()
    with endpoint_with(fp, f"bench-{name}", flow, 1, PYTHON, **endpoint) as target:
        assert fp.process is not None
        yield Way(name, label, target, fp.process.pid, time.monotonic() - began)


@contextlib.contextmanager
def ray_serve_way(cluster: RayCluster, flow: Path) -> Iterator[Way]:
    """A Ray Serve app of the flow behind Serve's HTTP proxy on the head node."""
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
    class FlowApp:
        def __init__(self, path: str) -> None:
            from flowport.engine import load_executor

            self.executor = load_executor(path)

        async def __call__(self, request: Request) -> Response:
            result = await self.executor.run_line(await request.json())
            if not result.ok:
                return Response(json.dumps({"error": str(result.error)}), status_code=500)
            return Response(json.dumps(result.outputs), media_type="application/json")

    port = free_port()
    began = time.monotonic()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(FlowApp.bind(str(flow)), name="flow", route_prefix="/score")
        body = json.dumps(PYTHON.body).encode()
        expected = checked(PYTHON, *post(f"http://127.0.0.1:{port}/score", body), "ray serve")
        target = Target(port=port, path="/score", body=body, expected=expected)
        yield Way(
            "ray-serve",
            f"Ray Serve {ray.__version__} proxy",
            target,
            cluster.nodes[0].pid,
            time.monotonic() - began,
        )
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def throughput(ctx: Context, ways: list[Way], sizes: Sizes, rounds: int) -> list[Row]:
    """Each way at each connection count, interleaved; the median round (by req/s) of each kept."""
    runs: dict[tuple[str, int], list[Row]] = {}
    for round_ in range(rounds):
        for connections in CONNECTIONS:
            workload = replace(PYTHON, connections=connections)
            for way in ways:
                log(f"round {round_ + 1}/{rounds}")
                row = measure(ctx, way.name, way.label, workload, way.target, way.root, way.ready_s, sizes)
                runs.setdefault((way.name, connections), []).append(row)
    kept = []
    for rows in runs.values():
        ordered = sorted(rows, key=lambda r: r.req_per_s)
        kept.append(ordered[len(ordered) // 2])
    return sorted(kept, key=lambda r: (r.connections, WAYS.index(r.way)))


# -- autoscaling reaction ----------------------------------------------------------------------


def reaction(fp: FlowportServer, name: str, flow: Path, sizes: Sizes, **endpoint: Any) -> dict[str, Any]:
    """Load start -> a second instance ready, on an autoscaled deployment (min 1, max 3)."""
    fp.create_endpoint(name, **endpoint)
    try:
        spec = {
            "model": {"path": str(flow)},
            "request_settings": SCALE_REQUESTS,
            "scale_settings": SCALE_SETTINGS,
        }
        operation = fp.wait(fp.create_deployment(name, "blue", spec, all_traffic=True))
        if operation["status"] != "Succeeded":
            raise RuntimeError(f"deployment {name}/blue failed: {json.dumps(operation)[:2000]}")
        key = fp.key(name)
        body = json.dumps(PYTHON.body).encode()
        expected = checked(PYTHON, *fp.score(name, key, body), f"gateway {name}")
        target = Target(
            fp.port,
            f"/endpoints/{name}/score",
            body,
            (("Authorization", f"Bearer {key}"),),
            expected=expected,
        )
        with LoadPool(target, 32, sizes.client_processes) as pool:
            started = time.monotonic()
            pool.start()
            second = third = None
            shown: dict[str, Any] = {}
            while time.monotonic() - started < 60 and third is None:
                shown = fp.deployment(name, "blue")
                ready = sum(1 for i in shown["instances"] if i["ready"])
                now = time.monotonic() - started
                if ready >= 2 and second is None:
                    second = now
                if ready >= 3:
                    third = now
                time.sleep(0.05)
            record = pool.stop()
        scaling = shown.get("scaling") or {}
        result = {
            "second_ready_s": second,
            "third_ready_s": third,
            "requests": record.requests,
            "failed": record.failed,
            "failures": record.failure_kinds(),
            "scaling": scaling,
            "nodes": [i.get("node") for i in shown.get("instances", [])],
        }
        log(
            f"  {name}: second instance ready {second} s, third {third} s;"
            f" {record.failed} of {record.requests} failed"
        )
        return result
    finally:
        fp.wait(fp.ok("DELETE", f"/endpoints/{name}")["operation"])


# -- output --------------------------------------------------------------------------------


def ratios(rows: list[Row]) -> dict[str, Any]:
    by = {(r.way, r.connections): r for r in rows}
    out: dict[str, Any] = {}
    for connections in CONNECTIONS:
        local = by.get(("local", connections))
        if local is None or not local.req_per_s:
            continue
        for way in WAYS[1:]:
            row = by.get((way, connections))
            if row is None:
                continue
            figures = {
                "req_per_s": row.req_per_s / local.req_per_s,
                "p50": row.p50_ms / local.p50_ms if local.p50_ms else None,
                "p99": row.p99_ms / local.p99_ms if local.p99_ms else None,
            }
            out[f"{way}/local c={connections}"] = figures
            print(
                f"c={connections:<3}  {way:9} / local: req/s {row.req_per_s:,.0f} / {local.req_per_s:,.0f}"
                f" = {figures['req_per_s']:.2f}x   p50 {row.p50_ms:.1f} / {local.p50_ms:.1f} ms"
                f"   p99 {row.p99_ms:.1f} / {local.p99_ms:.1f} ms"
            )
    return out


def print_reaction(where: str, found: dict[str, Any], target: float) -> bool:
    second = found.get("second_ready_s")
    met = second is not None and second <= target
    shown = f"{second:.2f} s" if second is not None else "not within 60 s"
    third = found.get("third_ready_s")
    print(
        f"autoscale {where:5}: load start -> 2nd instance ready {shown}"
        f" (3rd {f'{third:.2f} s' if third is not None else '-'});"
        f" {found.get('failed', 0)} of {found.get('requests', 0)} requests failed"
        f"   target <= {target:g} s: {verdict(met)}"
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 s runs, 1 s warm-up, one round")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per way (6)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each (2)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds, median kept (2)")
    parser.add_argument("--client-processes", type=int, default=2, help="load processes (2)")
    parser.add_argument("--skip-autoscale", action="store_true", help="no autoscaling reaction")
    args = parser.parse_args(argv)
    seconds, warmup, rounds = (4.0, 1.0, 1) if args.quick else (args.seconds, args.warmup, args.rounds)
    sizes = Sizes(seconds=seconds, warmup=warmup, client_processes=args.client_processes)
    try:
        importlib.metadata.version("ray")
        from ray import serve  # noqa: F401
    except ImportError as exc:
        print(f"bench/scale.py needs Ray Serve: .venv/bin/pip install 'ray[serve]' ({exc})", file=sys.stderr)
        return 2

    raise_open_files()
    scratch = Path(tempfile.mkdtemp(prefix="flowport-scale-"))
    ctx = Context(scratch, scratch / "flowport-home", scratch / "pf-home", use_wrk=False)
    load_before = os.getloadavg()
    rows: list[Row] = []
    found: dict[str, Any] = {}
    cluster = RayCluster()
    try:
        log("starting a Ray head and a second node (ray start)")
        cluster.start()
        flow = flow_copy(scratch, PYTHON.flow)
        with FlowportServer(scratch / "server-home", FLOWPORT) as fp, contextlib.ExitStack() as stack:
            log(f"flowport server up at {fp.url}; Ray cluster at {cluster.address}")
            compute = {"name": "lab", "type": "ray", "address": cluster.address}
            fp.ok("POST", "/computes", {"spec": compute})
            ways = [
                stack.enter_context(flowport_way(fp, "local", flow, "flowport, local runtime")),
                stack.enter_context(
                    flowport_way(fp, "ray", flow, "flowport, Ray runtime", compute="azureml:lab")
                ),
                stack.enter_context(ray_serve_way(cluster, flow)),
            ]
            for way in ways:
                log(f"{way.name}: first right answer {way.ready_s:.2f} s after create")
            rows = throughput(ctx, ways, sizes, rounds)
            stack.close()
            if not args.skip_autoscale:
                log("autoscaling reaction: local")
                found["autoscale_local"] = reaction(fp, "scale-local", flow, sizes)
                log("autoscaling reaction: Ray")
                found["autoscale_ray"] = reaction(fp, "scale-ray", flow, sizes, compute="azureml:lab")
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print_rows(rows)
    print("server CPU: local = gateway + instance; ray = the gateway only (the instance runs under the")
    print(
        "Ray node, counted in 'other'); ray-serve = the head node's tree"
        " (proxy, controller, replica if there)"
    )
    print()
    figures = ratios(rows)
    met = {}
    if "autoscale_local" in found:
        met["local"] = print_reaction("local", found["autoscale_local"], LOCAL_TARGET_S)
        met["ray"] = print_reaction("ray", found["autoscale_ray"], RAY_TARGET_S)
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
        " (2 cores shared with other work)"
    )
    payload = {
        "benchmark": "scale",
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "versions": {
            "flowport": importlib.metadata.version("flowport"),
            "ray": importlib.metadata.version("ray"),
        },
        "flowport_tracing": os.environ.get("FLOWPORT_TRACING", "(unset: on, built-in store on local)"),
        "sizes": asdict(sizes),
        "rounds": rounds,
        "request_settings": REQUEST_SETTINGS,
        "ray_serve": "one replica, max_ongoing_requests 256, num_cpus 0; proxy on the head only;"
        " the handler runs the flow with flowport's executor (load_executor(flow).run_line)",
        "cluster": "two ray start nodes on this machine, --num-cpus 1 each",
        "rows": [asdict(r) for r in rows],
        "ratios_vs_local": figures,
        "autoscale_settings": SCALE_SETTINGS | {"request_settings": SCALE_REQUESTS, "connections": 32},
        "autoscale_targets_s": {"local": LOCAL_TARGET_S, "ray": RAY_TARGET_S},
        "autoscale_met": met,
        **found,
    }
    print(f"\nresults: {write_results('scale', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
