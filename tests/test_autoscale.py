"""Autoscaling: the target-utilization policy, and a real endpoint scaling up and down under load."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowport.control import specs
from flowport.control.specs import SpecError
from flowport.runtime.autoscale import Autoscaler, ScaleSettings
from flowport.runtime.local import LocalRuntime
from tests.endpoint_harness import Flowport
from tests.test_runtime_local import KEY, Listener, eventually, plan

# -- the policy ----------------------------------------------------------------------------


def policy(**fields: Any) -> Autoscaler:
    """min 1, max 3, one request per instance at the target (capacity 2 x 50 %), polled every second."""
    settings = {"min_instances": 1, "max_instances": 3, "target_utilization_percentage": 50}
    settings |= {"polling_interval": 1, "cooldown_seconds": 10}
    return Autoscaler(ScaleSettings(**{**settings, **fields}), capacity=2)


def test_scales_up_at_once_to_what_the_load_needs() -> None:
    scaler = policy()
    decision = scaler.poll(0, current=1, in_flight=2)
    assert decision is not None and decision.count == 2
    assert "2 request(s) in flight on 1 instance(s): 100% utilization, target 50%" in decision.reason
    assert scaler.poll(1, current=2, in_flight=2) is None  # at the target: stay


def test_never_leaves_the_bounds() -> None:
    scaler = policy()
    assert scaler.poll(0, current=1, in_flight=100).count == 3  # type: ignore[union-attr]
    assert scaler.poll(1, current=1, in_flight=0) is None  # no load: min_instances stays
    outside = scaler.poll(2, current=5, in_flight=5)
    assert outside is not None and outside.count == 3
    assert "outside min_instances 1 / max_instances 3" in outside.reason
    assert policy(min_instances=2).poll(0, current=1, in_flight=0).count == 2  # type: ignore[union-attr]
    assert policy().needed(0) == 1 and policy().needed(10**6) == 3


def test_scales_down_only_after_the_cooldown_to_the_highest_need_in_it() -> None:
    scaler = policy()
    scaler.changed(0)
    assert scaler.poll(1, current=3, in_flight=0) is None
    assert scaler.poll(8, current=3, in_flight=2) is None  # a burst within the cool-down
    decision = scaler.poll(10.5, current=3, in_flight=0)
    assert decision is not None and decision.count == 2  # what the burst needed, not min
    assert "low for 10 s" in decision.reason
    scaler.changed(10.5)
    assert scaler.poll(19, current=2, in_flight=0) is None  # the cool-down starts again
    assert scaler.poll(21, current=2, in_flight=0).count == 1  # type: ignore[union-attr]


def test_samples_once_per_polling_interval() -> None:
    scaler = policy(polling_interval=5)
    assert scaler.poll(0, current=1, in_flight=0) is None
    assert not scaler.due(4.9)
    assert scaler.poll(4.9, current=1, in_flight=3) is None  # not due: the load is not even looked at
    assert scaler.due(5)
    assert scaler.poll(5, current=1, in_flight=3).count == 3  # type: ignore[union-attr]
    assert policy(polling_interval=0).interval > 0


def test_settings_come_from_scale_settings_with_azure_defaults() -> None:
    assert ScaleSettings.from_scale_settings({"type": "default"}) is None
    assert ScaleSettings.from_scale_settings(None) is None
    assert ScaleSettings.from_scale_settings({"type": "target_utilization"}) == ScaleSettings(1, 1, 70, 1)
    spec = specs.parse_deployment(
        {
            "name": "blue",
            "model": "m:1",
            "scale_settings": {"type": "target_utilization", "max_instances": "3", "cooldown_seconds": 5},
        }
    )
    scale = ScaleSettings.from_scale_settings(spec.extras["scale_settings"])
    assert scale == ScaleSettings(max_instances=3, cooldown_seconds=5)
    with pytest.raises(SpecError, match=r"max_instances: \(2\) is below min_instances \(3\)"):
        specs.parse_deployment(
            {
                "name": "blue",
                "model": "m:1",
                "scale_settings": {"type": "target_utilization", "min_instances": 3, "max_instances": 2},
            }
        )
    with pytest.raises(SpecError, match=r"scale_settings.polling_interval: must be between 1 and 3600"):
        specs.parse_deployment(
            {
                "name": "blue",
                "model": "m:1",
                "scale_settings": {"type": "target_utilization", "polling_interval": 0},
            }
        )


# -- the local runtime ---------------------------------------------------------------------


async def test_the_local_runtime_scales_on_its_load_source_within_the_bounds(
    tmp_path: Path, home: Path
) -> None:
    listener = Listener()
    runtime = LocalRuntime(tmp_path / "state", drain_seconds=5)
    runtime.set_listener(listener)
    per_instance = {"in_flight": 0}
    runtime.set_load_source(
        lambda key: {address: per_instance["in_flight"] for address in listener.current(key)}
    )
    # capacity 10 (the plan's max_concurrent_requests) x 50 %: 5 requests per instance at the target
    scale = ScaleSettings(3, 4, 50, polling_interval=0.2, cooldown_seconds=0.5)
    try:
        await runtime.apply(plan(count=1, scale=None))
        await runtime.apply(plan(scale=ScaleSettings(2, 4, 50, polling_interval=0.2, cooldown_seconds=0.5)))
        assert len(listener.current()) == 2  # autoscaling switched on: the count moved into the bounds
        await runtime.apply(plan(scale=scale))
        assert len(listener.current()) == 3  # new bounds: the count follows them at once
        per_instance["in_flight"] = 10
        await eventually(lambda: len(listener.current()) == 4)
        await runtime.apply(plan(revision="r2", scale=scale))  # a roll-out keeps the autoscaled count
        assert len(listener.current()) == 4 and {i.revision for i in runtime.instances(KEY)} == {"r2"}
        per_instance["in_flight"] = 0
        await eventually(lambda: len(runtime.scaling(KEY).events) == 2)  # type: ignore[union-attr]
        status = runtime.scaling(KEY)  # down to min_instances after the cool-down, drained
        assert status is not None and status.current_instances == 3
        assert [(e.from_count, e.to_count, e.succeeded) for e in status.events] == [
            (3, 4, True),
            (4, 3, True),
        ]
        assert status.events[0].reason.startswith(
            "30 request(s) in flight on 3 instance(s): 100% utilization, target 50%"
        )
        assert len(runtime.instances(KEY)) == 3
        await runtime.apply(plan(revision="r2", count=1, scale=None))  # type: default: instance_count
        assert len(listener.current()) == 1 and runtime.scaling(KEY) is None
    finally:
        await runtime.close()


# -- a real endpoint -------------------------------------------------------------------------


class Load:
    """``clients`` threads calling the endpoint back to back; every answer's status is kept."""

    def __init__(self, fp: Flowport, endpoint: str, clients: int) -> None:
        self.url = f"{fp.url}/endpoints/{endpoint}/score"
        self.headers = {"authorization": f"Bearer {fp.key(endpoint)}"}
        self.statuses: list[int] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stopping.is_set():
                answer = http.post(self.url, json={"text": "hi", "seconds": 0.3}, headers=self.headers)
                self.statuses.append(answer.status_code)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_an_endpoint_scales_up_under_load_and_back_down_without_a_failed_request(tmp_path: Path) -> None:
    with Flowport(tmp_path / "home") as fp:
        fp.endpoint("busy")
        shown = fp.deploy(
            "busy",
            "blue",
            request_settings={"max_concurrent_requests_per_instance": 4},
            scale_settings={
                "type": "target_utilization",
                "min_instances": 1,
                "max_instances": 3,
                "target_utilization_percentage": 25,  # one request in flight per instance
                "polling_interval": 1,
                "cooldown_seconds": 2,
            },
        )
        assert fp.traffic("busy", blue=100).status_code < 300
        assert len(shown["instances"]) == 1  # starts at min_instances
        assert shown["scaling"]["current_instances"] == 1
        assert (shown["scaling"]["min_instances"], shown["scaling"]["max_instances"]) == (1, 3)

        def ready() -> int:
            deployment = fp.ok("GET", "/endpoints/busy/deployments/blue")
            return sum(1 for instance in deployment["instances"] if instance["ready"])

        with Load(fp, "busy", clients=4) as heavy:
            wait_for("3 ready instances under load", lambda: ready() == 3)
        with Load(fp, "busy", clients=1) as light:  # scaling down drains: nothing in flight fails
            wait_for(
                "1 instance once the load dropped",
                lambda: (
                    ready() == 1 and len(fp.ok("GET", "/endpoints/busy/deployments/blue")["instances"]) == 1
                ),
            )
            time.sleep(0.5)
        assert heavy.statuses and light.statuses
        assert set(heavy.statuses) == {200} and set(light.statuses) == {200}

        deployment = fp.ok("GET", "/endpoints/busy/deployments/blue")
        last = deployment["scaling"]["last_scaling"]
        assert (deployment["scaling"]["current_instances"], last["to_instances"]) == (1, 1)
        history = fp.ok("GET", "/endpoints/busy/operations")
        scaled = [
            (op["from_instances"], op["to_instances"]) for op in history if op["kind"] == "ScaleDeployment"
        ]
        assert scaled[0][0] == 1 and max(to for _, to in scaled) == 3 and scaled[-1][1] == 1
        assert all(op["status"] == "Succeeded" for op in history if op["kind"] == "ScaleDeployment")
        # a shown deployment applies again unchanged: scaling is read-only
        assert "scaling" in specs.READ_ONLY


def test_the_monitoring_tab_shows_the_instance_count_and_bounds(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("watched")
    scale = {"type": "target_utilization", "min_instances": 2, "max_instances": 3, "cooldown_seconds": 600}
    server.deploy("watched", "blue", scale_settings=scale)
    page.goto(f"{server.url}/studio/endpoints/watched#monitoring")  # type: ignore[attr-defined]
    instances = page.locator("#monitor-instances")  # type: ignore[attr-defined]
    instances.get_by_text("2 ready").wait_for()
    assert "autoscaled 2 to 3" in instances.inner_text()
    page.goto(f"{server.url}/studio/endpoints/watched")  # type: ignore[attr-defined]
    table = page.locator("#deployments-table")  # type: ignore[attr-defined]
    table.get_by_text("2 (autoscaled 2 to 3)").wait_for()


def instance_processes(fp: Flowport) -> int:
    """The server's instance processes, counted in /proc (the API may be down)."""
    assert fp.process is not None
    children = Path(f"/proc/{fp.process.pid}/task/{fp.process.pid}/children").read_text().split()
    return sum(1 for child in children if "flowport.runtime.instance" in _cmdline(child))


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:  # it just exited
        return ""


def test_scaling_goes_on_while_the_control_plane_is_stopped(tmp_path: Path) -> None:
    with Flowport(tmp_path / "home") as fp:
        fp.endpoint("busy")
        scale = {"type": "target_utilization", "max_instances": 2, "target_utilization_percentage": 25}
        fp.deploy(
            "busy", "blue", request_settings={"max_concurrent_requests_per_instance": 4}, scale_settings=scale
        )
        assert fp.traffic("busy", blue=100).status_code < 300
        load = Load(fp, "busy", clients=3)
        control = fp.control_pid()
        os.kill(control, signal.SIGSTOP)
        try:
            with load:
                wait_for("a second instance process", lambda: instance_processes(fp) == 2)
        finally:
            os.kill(control, signal.SIGCONT)
        assert load.statuses and set(load.statuses) == {200}

        def events() -> list[dict[str, Any]]:
            history = fp.ok("GET", "/endpoints/busy/operations")
            return [op for op in history if op["kind"] == "ScaleDeployment"]

        wait_for("the scale-up in the history", lambda: bool(events()))
        (event,) = events()
        assert (event["from_instances"], event["to_instances"], event["status"]) == (1, 2, "Succeeded")
        assert fp.ok("GET", "/endpoints/busy/deployments/blue")["scaling"]["current_instances"] == 2
