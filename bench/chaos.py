"""Chaos under load: scoring must go on while parts of flowport are killed, busy or cut off.

Starts ``flowport server`` (scratch ``FLOWPORT_HOME``, SQLite) with endpoint ``chaos``: deployment
``blue`` (the 3-node Python flow, 2 instances) at 100%, and endpoint ``talk`` (the chat flow) on
flowport's test LLM in its own process. Keeps ``--connections`` of constant load on
``/endpoints/chaos/score`` (loopback only, bounded in time) while it, one phase after another:

    idle               nothing happens: the p99 every other phase is compared with
    kill instance      SIGKILL one of blue's instances; wait until it is ready again
    control busy       register a model with a 12 MB file and send 8 MB descriptions, in a loop
    control restart    SIGKILL the control plane process; wait until the API answers again
    shift traffic      create green, then traffic 50/50, then green=100
    cut the LLM        stop the LLM server; call the chat endpoint; start the LLM again

Prints per phase: requests, failed, p50, p99, p99 against idle; how long the chat endpoint took to
fail while the LLM was down and how long until it answered again; writes
``bench/results/chaos-<stamp>.json``. Targets: no failed request except those in flight on the
killed instance; p99 while the control plane is busy at most 2x idle; serving goes on through the
control-plane restart.

    .venv/bin/python bench/chaos.py            # about a minute
    .venv/bin/python bench/chaos.py --hold 2   # seconds of load per phase (default 5)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    CHAT_FLOW,
    CONNECTION_NAME,
    FLOWPORT,
    PYTHON_FLOW,
    FlowportServer,
    LoadPool,
    descendants,
    free_port,
    machine,
    write_results,
)
from rollout import Phase, failure_list, print_rows, python_flow_target, rows_of

ENDPOINT = "chaos"
CHAT = "talk"
REQUEST_SETTINGS = {"max_concurrent_requests_per_instance": 100, "request_timeout_ms": 10_000}
BIG_FILE_BYTES = 12 * 1024 * 1024
BIG_DESCRIPTION = 8 * 1024 * 1024
BUSY_TARGET = 2.0
"""p99 while the control plane is busy, at most this many times the idle p99."""


def log(message: str) -> None:
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


def spec(flow: Path, color: str, instance_count: int = 1) -> dict[str, Any]:
    return {
        "model": {"path": str(flow)},
        "instance_count": instance_count,
        "environment_variables": {"BENCH_COLOR": color},
        "request_settings": REQUEST_SETTINGS,
    }


def control_pid(server: FlowportServer) -> int:
    assert server.process is not None
    for pid in descendants(server.process.pid)[1:]:
        try:
            if b"flowport.control.process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise RuntimeError("the server has no control plane process")


def wait_for_api(server: FlowportServer, limit: float = 60) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit:
        try:
            if server.api("GET", "/health", timeout=2)[0] == 200:
                return time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"the API did not answer within {limit} s")


class LLM:
    """The test LLM in its own process, on a fixed port so that it can be stopped and started."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        command = [sys.executable, "-m", "flowport.testing.llm_server", "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Chaos:
    def __init__(self, server: FlowportServer, flow: Path, scratch: Path, llm: LLM, hold: float) -> None:
        self.server = server
        self.flow = flow
        self.scratch = scratch
        self.llm = llm
        self.hold = hold
        self.phases: list[Phase] = []
        self.notes: dict[str, Any] = {}

    def phase(self, name: str, action: Callable[[], None] | None = None) -> None:
        log(f"phase: {name}")
        phase = Phase(name, time.monotonic())
        self.phases.append(phase)
        try:
            if action is not None:
                action()
            phase.operation = "done"
        except Exception as exc:  # the failure is the result: report it with the load so far
            phase.operation, phase.error = "failed", str(exc)
            log(f"  {name}: {exc}")
        phase.applied = time.monotonic()
        time.sleep(self.hold)
        phase.ended = time.monotonic()

    def kill_instance(self) -> None:
        before = self.server.deployment(ENDPOINT, "blue")["instances"]
        victim = before[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        began = time.monotonic()
        while True:
            instances = self.server.deployment(ENDPOINT, "blue")["instances"]
            if victim not in {i["pid"] for i in instances} and all(i["ready"] for i in instances):
                break
            if time.monotonic() - began > 60:
                raise RuntimeError("the killed instance was not replaced within 60 s")
            time.sleep(0.02)
        self.notes["instance_back_s"] = round(time.monotonic() - began, 3)

    def control_busy(self) -> None:
        """Large models and large bodies at the control plane for the whole phase."""
        big = self.scratch / "big-flow"
        shutil.copytree(self.flow, big, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
        (big / "big.bin").write_bytes(os.urandom(BIG_FILE_BYTES))
        stop = time.monotonic() + self.hold
        counts = {"models": 0, "descriptions": 0, "answers": {}}

        def keep_busy() -> None:
            while time.monotonic() < stop:
                spec = {"name": "big", "path": str(big)}
                status, _ = self.server.api("POST", "/models", {"spec": spec}, timeout=120)
                counts["models"] += 1
                counts["answers"][status] = counts["answers"].get(status, 0) + 1
                description = {"spec": {"description": "x" * BIG_DESCRIPTION}}
                status, _ = self.server.api("PATCH", f"/endpoints/{ENDPOINT}", description, timeout=120)
                counts["descriptions"] += 1
                counts["answers"][status] = counts["answers"].get(status, 0) + 1

        worker = threading.Thread(target=keep_busy)
        worker.start()
        self.notes["control_busy"] = counts
        self._join_after_hold = worker

    def control_restart(self) -> None:
        pid = control_pid(self.server)
        os.kill(pid, signal.SIGKILL)
        self.notes["control_back_s"] = round(wait_for_api(self.server), 3)

    def shift_traffic(self) -> None:
        server = self.server
        operation = server.wait(server.create_deployment(ENDPOINT, "green", spec(self.flow, "green")))
        if operation["status"] != "Succeeded":
            raise RuntimeError(f"green failed: {operation}")
        server.wait(server.set_traffic(ENDPOINT, {"blue": 50, "green": 50}))
        time.sleep(self.hold / 2)
        server.wait(server.set_traffic(ENDPOINT, {"green": 100}))

    def cut_llm(self) -> None:
        key = self.server.key(CHAT)
        body = json.dumps({"question": "are you there?", "chat_history": []}).encode()
        self.llm.stop()
        answers = []
        for _ in range(5):
            began = time.monotonic()
            status, text = self.server.score(CHAT, key, body)
            answers.append({"status": status, "ms": round((time.monotonic() - began) * 1000, 1)})
        self.notes["llm_down"] = {"answers": answers, "first_error": text.decode(errors="replace")[:300]}
        self.llm.start()
        began = time.monotonic()
        while self.server.score(CHAT, key, body)[0] != 200:
            if time.monotonic() - began > 30:
                raise RuntimeError("the chat endpoint did not answer again within 30 s of the LLM's return")
            time.sleep(0.05)
        self.notes["llm_back_s"] = round(time.monotonic() - began, 3)

    def run(self) -> None:
        self.phase("idle")
        self.phase("kill instance", self.kill_instance)
        self._join_after_hold: threading.Thread | None = None
        self.phase("control busy", self.control_busy)
        if self._join_after_hold is not None:
            self._join_after_hold.join()
        self.phase("control restart", self.control_restart)
        self.phase("shift traffic", self.shift_traffic)
        self.phase("cut the LLM", self.cut_llm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hold", type=float, default=5.0, help="seconds of load per phase (5)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument("--client-processes", type=int, default=1, help="load processes (1)")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="flowport-chaos-"))
    flow = scratch / "flows" / PYTHON_FLOW.name
    shutil.copytree(PYTHON_FLOW, flow, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
    server = FlowportServer(scratch / "home", FLOWPORT)
    llm = LLM()
    llm.start()
    try:
        server.start()
        log(f"flowport server at {server.url} (home {server.home})")
        connection = {"type": "open_ai", "api_key": "bench", "base_url": llm.base_url}
        server.ok("PUT", f"/connections/{CONNECTION_NAME}", connection)
        server.create_endpoint(ENDPOINT)
        server.wait(server.create_deployment(ENDPOINT, "blue", spec(flow, "blue", instance_count=2)))
        server.wait(server.set_traffic(ENDPOINT, {"blue": 100}))
        server.create_endpoint(CHAT)
        chat_spec = {"model": {"path": str(CHAT_FLOW)}, "request_settings": REQUEST_SETTINGS}
        server.wait(server.create_deployment(CHAT, "blue", chat_spec))
        server.wait(server.set_traffic(CHAT, {"blue": 100}))
        target = python_flow_target(server, ENDPOINT)
        chaos = Chaos(server, flow, scratch, llm, args.hold)
        with LoadPool(target, args.connections, args.client_processes) as pool:
            began = time.monotonic()
            pool.start()
            try:
                chaos.run()
            finally:
                record = pool.stop()
    finally:
        server.stop()
        llm.stop()

    phases = chaos.phases
    phases[-1].ended = max(phases[-1].ended, time.monotonic())
    rows = rows_of(record, phases)
    failures = failure_list(record, phases, began)
    idle_p99 = rows[0].p99_ms or 1.0
    print()
    print_rows(rows)
    print("\np99 against idle: " + ", ".join(f"{r.phase} {r.p99_ms / idle_p99:.2f}x" for r in rows[1:-1]))
    busy = next(r for r in rows if r.phase == "control busy")
    busy_ratio = busy.p99_ms / idle_p99
    print(
        f"control busy: p99 {busy_ratio:.2f}x idle (target <= {BUSY_TARGET:g}x);"
        f" {chaos.notes.get('control_busy')}"
    )
    print(
        f"instance back in {chaos.notes.get('instance_back_s')} s; control plane back in"
        f" {chaos.notes.get('control_back_s')} s; LLM down: {chaos.notes.get('llm_down')};"
        f" chat answered again {chaos.notes.get('llm_back_s')} s after the LLM's return"
    )
    outside_kill = [f for f in failures if f["phase"] != "kill instance"]
    for f in failures[:10]:
        print(f"  failed: {f['phase']} +{f['into_phase_s']:.3f}s {f['kind']} {f['error'][:160]}")
    met = not outside_kill and busy_ratio <= BUSY_TARGET and all(not p.error for p in phases)
    print(
        f"\n{record.requests} requests, {len(failures)} failed ({len(outside_kill)} outside the killed"
        f" instance's in-flight ones; target 0): {'met' if met else 'NOT met'}"
    )
    path = write_results(
        "chaos",
        {
            "benchmark": "chaos",
            "machine": machine(),
            "connections": args.connections,
            "hold_s": args.hold,
            "rows": [r.__dict__ for r in rows],
            "notes": chaos.notes,
            "failures": failures[:200],
            "busy_p99_ratio": busy_ratio,
            "met": met,
        },
    )
    print(f"results: {path}")
    if met:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"logs kept in {scratch}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
