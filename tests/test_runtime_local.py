"""The local runtime with real instance processes: readiness, scaling, rollouts, restarts, venvs, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowport.runtime.base import DeploymentFailed, DeploymentKey, DeploymentPlan, InstanceConfig, Probe
from flowport.runtime.local import LocalRuntime, supervisor
from flowport.runtime.local.venvs import environment_digest

FLOWS = Path(__file__).parent / "runtime_flows"
INFO = FLOWS / "info"
BROKEN = FLOWS / "broken"
SLEEPY = FLOWS / "sleepy"
FIRST_ONLY = FLOWS / "first_only"
KEY = DeploymentKey("ep", "blue")


class Listener:
    """Records every ready set the runtime reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[DeploymentKey, list[str]]] = []

    def __call__(self, key: DeploymentKey, addresses: list[str]) -> None:
        self.calls.append((key, list(addresses)))

    def current(self, key: DeploymentKey = KEY) -> list[str]:
        sets = self.sets(key)
        return sets[-1] if sets else []

    def sets(self, key: DeploymentKey = KEY) -> list[list[str]]:
        return [addresses for k, addresses in self.calls if k == key]


class Router:
    """Like the gateway: round robin over the listener's ready set, one retry on a connect error."""

    def __init__(self, listener: Listener, key: DeploymentKey = KEY) -> None:
        self.listener = listener
        self.key = key
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.turn = 0
        self.retries = 0

    def pick(self) -> str:
        addresses = self.listener.current(self.key)
        if not addresses:
            raise AssertionError("no ready instance")
        self.turn += 1
        return addresses[self.turn % len(addresses)]

    async def score(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await post(self.client(self.pick()), body)
        except httpx.ConnectError:
            self.retries += 1
            return await post(self.client(self.pick()), body)

    def client(self, address: str) -> httpx.AsyncClient:
        if address not in self.clients:
            self.clients[address] = client_for(address)
        return self.clients[address]

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients.values()))


class Load:
    """Requests in a loop from a few tasks until stopped; every failure is kept."""

    def __init__(self, router: Router, workers: int = 4, seconds: float = 0.05) -> None:
        self.router = router
        self.answers: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.running = True
        self.tasks = [asyncio.create_task(self.worker(seconds)) for _ in range(workers)]

    async def worker(self, seconds: float) -> None:
        while self.running:
            try:
                self.answers.append(await self.router.score({"text": "load", "seconds": seconds}))
            except Exception as exc:
                self.failures.append(repr(exc))

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)
        await self.router.aclose()
        print(f"{len(self.answers)} requests, {self.router.retries} retried, {len(self.failures)} failed")


def client_for(address: str) -> httpx.AsyncClient:
    socket = address.removeprefix("unix:")
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket), base_url="http://instance")


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/score", json=body, timeout=10)
    if response.status_code != 200:
        raise AssertionError(f"{response.status_code}: {response.text}")
    return response.json()


async def score(address: str, text: str = "hi") -> dict[str, Any]:
    async with client_for(address) as client:
        return await post(client, {"text": text})


async def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """Running (a zombie left to an init that does not reap counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def plan(
    source: Path = INFO,
    *,
    key: DeploymentKey = KEY,
    revision: str = "r1",
    count: int = 1,
    flavor: str = "",
    **extra: Any,
) -> DeploymentPlan:
    config = InstanceConfig(source=str(source), environment_variables={"FLAVOR": flavor})
    return DeploymentPlan(key=key, revision=revision, instance_count=count, config=config, **extra)


@pytest.fixture
def listener() -> Listener:
    return Listener()


@pytest.fixture
async def runtime(tmp_path: Path, home: Path, listener: Listener) -> AsyncIterator[LocalRuntime]:
    runtime = LocalRuntime(tmp_path / "state", drain_seconds=5)
    runtime.set_listener(listener)
    yield runtime
    await runtime.close()


async def test_new_deployment_starts_ready_instances(runtime: LocalRuntime, listener: Listener) -> None:
    started = time.monotonic()
    await runtime.apply(plan(count=2))
    print(f"2 instances ready in {time.monotonic() - started:.2f} s")
    states = runtime.instances(KEY)
    assert len(states) == 2
    assert all(s.ready and s.revision == "r1" and s.restarts == 0 for s in states)
    assert all(s.address.startswith("unix:/tmp/fp-") and len(s.address) < 100 for s in states)
    assert len({s.pid for s in states}) == 2
    # One report, once both are ready.
    assert listener.sets() == [[s.address for s in states]]
    for state in states:
        answer = await score(state.address, "hello")
        assert answer["echoed"] == "hello"
        assert answer["pid"] == state.pid
    for state in states:
        assert (runtime.state_dir / "logs" / "ep" / "blue" / f"{state.id}.log").exists()


async def test_logs_and_close(runtime: LocalRuntime, listener: Listener) -> None:
    await runtime.apply(plan(count=2))
    states = runtime.instances(KEY)
    for state in states:
        await score(state.address)
    lines = runtime.logs(KEY, 100)
    assert any(line.startswith(f"[{states[0].id}] ") for line in lines)
    assert any(line.startswith(f"[{states[1].id}] ") and '"event":"request"' in line for line in lines)
    assert len(runtime.logs(KEY, 1)) == 1
    assert runtime.logs(DeploymentKey("ep", "nothing"), 10) == []

    socket_dir = Path(states[0].address.removeprefix("unix:")).parent
    await runtime.close()
    assert not any(alive(s.pid) for s in states if s.pid)
    assert not socket_dir.exists()
    assert listener.current() == []
    with pytest.raises(RuntimeError):
        await runtime.apply(plan())


async def test_scale_up_and_down_without_failed_requests(runtime: LocalRuntime, listener: Listener) -> None:
    await runtime.apply(plan(count=1))
    load = Load(Router(listener))
    await asyncio.sleep(0.3)
    await runtime.apply(plan(count=3))
    assert len(runtime.instances(KEY)) == 3
    assert len(listener.current()) == 3
    await asyncio.sleep(0.5)
    everyone = runtime.instances(KEY)
    await runtime.apply(plan(count=1))
    await asyncio.sleep(0.3)
    await load.stop()

    assert load.failures == []
    assert len({answer["pid"] for answer in load.answers}) == 3
    (left,) = runtime.instances(KEY)
    assert listener.current() == [left.address]
    assert [alive(s.pid) for s in everyone if s.pid].count(True) == 1


async def test_rolling_update_without_failed_requests(runtime: LocalRuntime, listener: Listener) -> None:
    await runtime.apply(plan(count=2, flavor="old"))
    old = runtime.instances(KEY)
    load = Load(Router(listener))
    await asyncio.sleep(0.3)
    await runtime.apply(plan(count=2, revision="r2", flavor="new"))
    await asyncio.sleep(0.3)
    await load.stop()

    assert load.failures == []
    assert {answer["flavor"] for answer in load.answers} == {"old", "new"}
    new = runtime.instances(KEY)
    assert len(new) == 2 and all(s.revision == "r2" and s.ready for s in new)
    assert {s.pid for s in new}.isdisjoint({s.pid for s in old})
    assert not any(alive(s.pid) for s in old if s.pid)
    for state in new:
        assert (await score(state.address))["flavor"] == "new"
    # New ready before old withdrawn: the ready set never shrank below two.
    assert min(len(addresses) for addresses in listener.sets()) == 2
    assert listener.current() == [s.address for s in new]


async def test_rolling_update_with_a_count_change(runtime: LocalRuntime) -> None:
    await runtime.apply(plan(count=3))
    await runtime.apply(plan(count=1, revision="r2"))
    assert [s.revision for s in runtime.instances(KEY)] == ["r2"]
    await runtime.apply(plan(count=3, revision="r3"))
    states = runtime.instances(KEY)
    assert [s.revision for s in states] == ["r3"] * 3 and all(s.ready for s in states)


async def test_a_flow_that_fails_to_load_keeps_the_old_revision(
    runtime: LocalRuntime, listener: Listener
) -> None:
    await runtime.apply(plan(count=2))
    before = runtime.instances(KEY)
    reported = listener.current()
    with pytest.raises(DeploymentFailed) as failed:
        await runtime.apply(plan(BROKEN, revision="r2", count=2))
    assert "exited with code 1 before it was ready" in failed.value.reason
    assert "flowport_missing_dependency" in "\n".join(failed.value.log_tail)
    assert runtime.instances(KEY) == before
    assert listener.current() == reported
    for state in before:
        assert (await score(state.address))["echoed"] == "hi"

    fresh = DeploymentKey("ep", "green")
    with pytest.raises(DeploymentFailed) as failed:
        await runtime.apply(plan(BROKEN, key=fresh, count=2))
    assert "flowport_missing_dependency" in str(failed.value)
    assert runtime.instances(fresh) == []
    assert listener.sets(fresh) == []


async def test_a_rollout_failing_halfway_restores_the_old_revision(
    runtime: LocalRuntime, listener: Listener, tmp_path: Path
) -> None:
    await runtime.apply(plan(count=2, flavor="old"))
    before = runtime.instances(KEY)
    config = InstanceConfig(
        source=str(FIRST_ONLY), environment_variables={"FIRST_ONLY_MARKER": str(tmp_path / "m")}
    )
    with pytest.raises(DeploymentFailed) as failed:
        await runtime.apply(DeploymentPlan(KEY, "r2", 2, config))
    assert "first_only: another instance loaded first" in "\n".join(failed.value.log_tail)
    after = runtime.instances(KEY)
    assert len(after) == 2 and all(s.revision == "r1" and s.ready for s in after)
    assert (
        len({s.pid for s in before} & {s.pid for s in after}) == 1
    )  # one old one was replaced, then restored
    assert listener.current() == [s.address for s in after]
    assert min(len(addresses) for addresses in listener.sets()) == 2
    for state in after:
        assert (await score(state.address))["flavor"] == "old"


async def test_an_instance_not_ready_in_time_is_killed(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "MIN_STARTUP", 4.0)  # time to import and print, on a busy machine
    readiness = Probe(initial_delay=0, period=0.1, failure_threshold=1)
    with pytest.raises(DeploymentFailed) as failed:
        await runtime.apply(plan(SLEEPY, count=1, readiness=readiness))
    assert "was not ready within 4 s" in failed.value.reason
    assert "sleepy: loading takes a while" in failed.value.log_tail
    assert runtime.instances(KEY) == []


async def test_a_killed_instance_is_restarted(runtime: LocalRuntime, listener: Listener) -> None:
    await runtime.apply(plan(count=1))
    (before,) = runtime.instances(KEY)
    assert before.pid
    os.kill(before.pid, signal.SIGKILL)
    killed = time.monotonic()
    await eventually(lambda: listener.current() == [])
    await eventually(lambda: any(s.ready and s.pid != before.pid for s in runtime.instances(KEY)))
    print(f"killed instance ready again in {time.monotonic() - killed:.2f} s")
    (after,) = runtime.instances(KEY)
    assert after.id == before.id and after.restarts == 1
    assert listener.current() == [after.address]
    assert (await score(after.address))["pid"] == after.pid
    assert any("exited with code -9; restarting" in line for line in runtime.logs(KEY, 50))


async def test_a_hung_instance_fails_liveness_and_is_replaced(runtime: LocalRuntime) -> None:
    liveness = Probe(initial_delay=0, period=0.2, timeout=0.2, failure_threshold=2)
    await runtime.apply(plan(count=1, liveness=liveness))
    (before,) = runtime.instances(KEY)
    assert before.pid
    os.kill(before.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: any(s.ready and s.pid != before.pid for s in runtime.instances(KEY)))
    finally:
        if alive(before.pid):
            os.kill(before.pid, signal.SIGCONT)
    (after,) = runtime.instances(KEY)
    assert after.restarts == 1
    assert not alive(before.pid)
    assert (await score(after.address))["pid"] == after.pid
    assert any("liveness probes in a row; killed" in line for line in runtime.logs(KEY, 50))


async def test_a_stalled_instance_is_withdrawn_then_readded(
    runtime: LocalRuntime, listener: Listener
) -> None:
    readiness = Probe(initial_delay=0, period=0.1, timeout=0.2, failure_threshold=2)
    await runtime.apply(plan(count=1, readiness=readiness))
    (before,) = runtime.instances(KEY)
    assert before.pid
    os.kill(before.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: listener.current() == [])
        assert not runtime.instances(KEY)[0].ready
    finally:
        os.kill(before.pid, signal.SIGCONT)
    await eventually(lambda: listener.current() == [before.address])
    assert runtime.instances(KEY) == [before]  # same process, no restart


SERVER = """
import asyncio, json, sys
from pathlib import Path
from flowport.runtime.base import DeploymentKey, DeploymentPlan, InstanceConfig
from flowport.runtime.local import LocalRuntime, supervisor

async def main():
    runtime = LocalRuntime(Path(sys.argv[1]))
    key = DeploymentKey("ep", "blue")
    await runtime.apply(DeploymentPlan(key, "r1", 2, InstanceConfig(source=sys.argv[2])))
    print(json.dumps([[s.pid, s.address] for s in runtime.instances(key)]), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_instances_die_with_a_killed_server(tmp_path: Path, home: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp_path / "state"), str(INFO)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        instances = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    pids = [pid for pid, _ in instances]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)
    shutil.rmtree(Path(instances[0][1].removeprefix("unix:")).parent.parent)  # the runtime folder


async def test_remove_withdraws_then_stops_everything(runtime: LocalRuntime, listener: Listener) -> None:
    await runtime.apply(plan(count=2))
    states = runtime.instances(KEY)
    await runtime.remove(KEY)
    assert listener.current() == []
    assert runtime.instances(KEY) == []
    assert not any(alive(s.pid) for s in states if s.pid)
    assert runtime.logs(KEY, 10)  # the logs outlive the deployment
    await runtime.remove(DeploymentKey("ep", "unknown"))


async def test_requirements_run_in_a_cached_venv(
    runtime: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # already satisfied: pip needs no network
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pyyaml\n")
    await runtime.apply(plan(count=1, requirements=requirements))
    (state,) = runtime.instances(KEY)
    prefix = (await score(state.address))["prefix"]
    venvs = runtime.state_dir / "venvs"
    assert Path(prefix).parent == venvs and len(Path(prefix).name) == 16
    built = (Path(prefix) / ".flowport-ready").stat().st_mtime_ns

    again = tmp_path / "again" / "requirements.txt"
    again.parent.mkdir()
    again.write_text("pyyaml\n")
    green = DeploymentKey("ep", "green")
    await runtime.apply(plan(key=green, count=1, requirements=again))
    (other,) = runtime.instances(green)
    assert (await score(other.address))["prefix"] == prefix
    assert (Path(prefix) / ".flowport-ready").stat().st_mtime_ns == built


async def test_failing_requirements_name_pip_output(
    runtime: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("not a valid requirement!!\n")
    with pytest.raises(DeploymentFailed) as failed:
        await runtime.apply(plan(count=1, requirements=requirements))
    assert failed.value.reason.startswith("installing requirements.txt failed")
    assert any("requirement" in line.lower() for line in failed.value.log_tail)
    assert runtime.instances(KEY) == []
    assert [p for p in (runtime.state_dir / "venvs").iterdir() if p.is_dir()] == []


def test_a_venv_is_named_by_its_local_packages_content_too(tmp_path: Path) -> None:
    """The same requirement lines naming a local wheel, folder or ``-r`` file whose content changed
    name another venv (else the cached one would keep the old package)."""
    flow = tmp_path / "flow"
    (flow / "pkg").mkdir(parents=True)
    (flow / "pkg" / "setup.py").write_text("version = 1\n")
    (flow / "more.txt").write_text("pyyaml\n")
    wheel = tmp_path / "dist" / "tool-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"wheel one")
    requirements = flow / "requirements.txt"
    requirements.write_text(f"./pkg\n-r more.txt\nrequests  # a package name, not a path\n{wheel}\n")
    extra = [f"file://{wheel}"]

    content, first = environment_digest(requirements, extra)
    assert content.startswith(requirements.read_bytes())
    assert environment_digest(requirements, extra)[1] == first  # nothing changed: the cached venv
    (flow / "pkg" / "__pycache__").mkdir()
    (flow / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert environment_digest(requirements, extra)[1] == first  # caches do not count

    seen = {first}
    for change in (
        lambda: (flow / "pkg" / "setup.py").write_text("version = 2\n"),
        lambda: (flow / "more.txt").write_text("pyyaml\nhttpx\n"),
        lambda: wheel.write_bytes(b"wheel two"),
    ):
        change()
        digest = environment_digest(requirements, extra)[1]
        assert digest not in seen
        seen.add(digest)

    only_extra = environment_digest(None, [f"file://{wheel}"])[1]
    wheel.write_bytes(b"wheel three")
    assert environment_digest(None, [f"file://{wheel}"])[1] != only_extra
    assert (
        environment_digest(None, ["requests", "pyyaml==6.0"])[1]
        == environment_digest(None, ["requests", "pyyaml==6.0"])[1]
    )


def test_requirement_lines_that_are_no_local_path_leave_the_digest_to_pip(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"~nosuchuser/pkg\n./{'x' * 300}/pkg\n-e .\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "big").write_bytes(b"an environment is not the package")
    _, first = environment_digest(requirements)  # no error: pip will say what is wrong
    (tmp_path / ".venv" / "big").write_bytes(b"changed")
    assert environment_digest(requirements)[1] == first
    (tmp_path / "module.py").write_text("x = 1\n")  # the package itself (-e .) changed
    assert environment_digest(requirements)[1] != first
