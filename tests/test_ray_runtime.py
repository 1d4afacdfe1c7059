"""The Ray runtime against a real two-node Ray cluster started here with ``ray start``.

Both nodes run on this machine (one CPU each, no dashboard); the flowport server joins the
cluster as a driver through a registered ``ray`` compute. Skipped with the reason when Ray is
not installed or its cluster cannot start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.endpoint_harness import FLOWS, Flowport, score_continuously
from tests.test_traces import wait_for_trace

pytest.importorskip("ray", reason="Ray is not installed (pip install 'flowport[ray]')")

RAY = str(Path(sys.executable).parent / "ray")
NODE_IP = "127.0.0.1"
SECRET = "ray-secret-value-8d1f"
RUNTIME_FLOWS = Path(__file__).parent / "runtime_flows"


def listening_address(pid: int) -> str:
    """``host:port`` a process listens on over IPv4 (the two nodes run on this machine), from /proc."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                sockets.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in sockets:  # LISTEN
            host, port = fields[1].split(":")
            return f"{'.'.join(str(b) for b in reversed(bytes.fromhex(host)))}:{int(port, 16)}"
    raise AssertionError(f"process {pid} listens on no TCP port")


class RayCluster:
    """A head and a second node, each a ``ray start --block`` process group of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"{NODE_IP}:{self.port}"
        self.temp = Path(tempfile.mkdtemp(prefix="fpray-", dir="/tmp"))  # Ray's socket paths are short
        self.nodes: list[subprocess.Popen[bytes]] = []

    def _start(self, *args: str) -> None:
        log = (self.temp / f"node{len(self.nodes)}.log").open("ab")
        common = ["--num-cpus", "1", "--node-ip-address", NODE_IP, "--disable-usage-stats", "--block"]
        common += ["--object-store-memory", str(80 * 1024 * 1024)]
        self.nodes.append(
            subprocess.Popen(
                [RAY, "start", *args, *common],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # pip in a runtime environment finds what it needs installed: no network
                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PIP_NO_INDEX": "1"},
            )
        )

    def start(self) -> None:
        self._start(
            "--head", "--port", str(self.port), "--include-dashboard=false", f"--temp-dir={self.temp}"
        )
        self.wait_for_nodes(1)
        self._start("--address", self.address)
        self.wait_for_nodes(2)

    def status(self) -> str:
        return subprocess.run(
            [RAY, "status", "--address", self.address], capture_output=True, text=True, timeout=60
        ).stdout

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(node.poll() is not None for node in self.nodes):
                break
            active = self.status().partition("Active:")[2].partition("Pending:")[0]
            if active.count("node_") >= count:
                return
            time.sleep(1)
        logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(self.temp.glob("node*.log")))
        self.stop()
        pytest.skip(f"a Ray cluster of {count} node(s) could not start here:\n{logs}")

    def stop(self) -> None:
        for node in reversed(self.nodes):  # the second node first, then the head
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)  # whatever of the node's group is left
            node.wait()
        self.nodes.clear()

    def kill_raylet(self, index: int) -> str:
        """``kill -9`` the raylet of node ``index``; the id of the node lost."""
        group = self.nodes[index].pid
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError):
                if not proc.name.isdigit() or os.getpgid(int(proc.name)) != group:
                    continue
                args = (proc / "cmdline").read_bytes().split(b"\0")
                if args[0].endswith(b"/raylet"):
                    node_id = next(a for a in args if a.startswith(b"--node_id="))
                    os.kill(int(proc.name), signal.SIGKILL)
                    return node_id.partition(b"=")[2].decode()
        raise AssertionError(f"node {index} has no raylet")

    def files_holding(self, text: str) -> list[str]:
        found = []
        for path in self.temp.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_socket() and text.encode() in path.read_bytes():
                    found.append(str(path))
        return found


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    if shutil.which(RAY) is None:
        pytest.skip(f"Ray's command {RAY} is missing")
    cluster = RayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp, ignore_errors=True)


def test_deployments_run_on_a_ray_cluster_behind_the_gateway(
    ray_cluster: RayCluster, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWPORT_TRACE_RATE", "all")  # the gateway records every request's trace
    with Flowport(home) as fp:
        fp.cli("compute", "create", "--name", "lab", "--type", "ray", "--address", ray_cluster.address)
        fp.endpoint("shop", compute="azureml:lab")
        blue = fp.deploy(
            "shop",
            "blue",
            instance_count=2,
            environment_variables={"COLOR": "blue", "API_KEY": SECRET},
            liveness_probe={"initial_delay": 1, "period": 1},
            readiness_probe={"initial_delay": 0, "period": 1},
        )
        instances = blue["instances"]
        assert len(instances) == 2 and all(i["ready"] for i in instances)
        assert len({i["node"] for i in instances}) == 2  # spread over both nodes
        fp.deploy("shop", "green", environment_variables={"COLOR": "green"})
        assert fp.traffic("shop", blue=50, green=50).status_code == 200

        # the gateway in front: key auth, the traffic split, the pin header
        assert fp.score("shop", {"text": "x"}, key="wrong-key-0123456789").status_code == 401
        colors = {fp.score("shop", {"text": "x"}).json()["color"] for _ in range(40)}
        assert colors == {"blue", "green"}
        pinned = fp.score("shop", {"text": "x"}, **{"azureml-model-deployment": "green"})
        assert pinned.json() == {"echoed": "x", "color": "green"}

        # an instance listens on its node's address, but answers only its deployment's gateway
        for instance in instances:
            url = f"http://{listening_address(instance['pid'])}"
            refused = httpx.post(f"{url}/score", json={"text": "x"}, timeout=10)
            assert refused.status_code == 401 and "echoed" not in refused.text
            assert httpx.get(f"{url}/health", timeout=10).status_code == 401

        # an instance's spans come from its node to the built-in trace store
        traced = fp.score(
            "shop", {"text": "x"}, **{"azureml-model-deployment": "green", "x-request-id": "on-ray"}
        )
        assert traced.status_code == 200
        trace = wait_for_trace(fp, "on-ray", 3)
        spans = {span["name"]: span for span in trace["spans"]}
        assert spans["probe"]["parent_id"] == spans["POST /endpoints/shop/score"]["span_id"]
        assert spans["answer"]["parent_id"] == spans["probe"]["span_id"]
        assert spans["probe"]["attributes"]["flowport.deployment"] == "green"

        # an update rolls instance by instance and stays spread
        assert fp.update("shop", "blue", "environment_variables.COLOR=navy")["status"] == "Succeeded"
        rolled = fp.ok("GET", "/endpoints/shop/deployments/blue")["instances"]
        assert len(rolled) == 2 and {i["id"] for i in rolled}.isdisjoint({i["id"] for i in instances})
        assert len({i["node"] for i in rolled}) == 2
        navy = fp.score("shop", {"text": "y"}, **{"azureml-model-deployment": "blue"})
        assert navy.json() == {"echoed": "y", "color": "navy"}

        # a broken update fails its probes and rolls back: the previous instances keep serving
        broken = fp.update(
            "shop", "blue", f"model.path={FLOWS / 'crashing'}", "environment_variables.CRASH_ON_START=1"
        )
        assert broken["status"] == "Failed"
        assert "the model files are missing" in json.dumps(broken["error"])
        after = fp.ok("GET", "/endpoints/shop/deployments/blue")
        assert after["provisioning_state"] == "Failed"
        assert {i["id"] for i in after["instances"]} == {i["id"] for i in rolled}
        again = fp.score("shop", {"text": "z"}, **{"azureml-model-deployment": "blue"})
        assert again.json() == {"echoed": "z", "color": "navy"}

        # the flow's requirements.txt is the actor's pip runtime environment (a virtualenv Ray makes)
        flow = shutil.copytree(RUNTIME_FLOWS / "info", tmp_path / "info")
        (flow / "requirements.txt").write_text("pyyaml\n")
        fp.deploy("shop", "yellow", model={"path": str(flow)})
        info = fp.score("shop", {"text": "x"}, **{"azureml-model-deployment": "yellow"}).json()
        assert info["prefix"].startswith(str(ray_cluster.temp)) and "pip" in info["prefix"], info

        logs = fp.ok("GET", "/endpoints/shop/deployments/green/logs", params={"lines": 50})["lines"]
        assert any("instance ready to serve" in line for line in logs)
        # the config (a secret variable) went to the actors sealed: nothing of Ray's holds it
        assert ray_cluster.files_holding(SECRET) == []

        fp.traffic("shop", blue=100, green=0)
        fp.wait(fp.ok("DELETE", "/endpoints/shop/deployments/green")["operation"])
        assert fp.score("shop", {"text": "x"}).json()["color"] == "navy"


def test_an_unreachable_ray_cluster_fails_the_deployment_with_the_reason(home: Path) -> None:
    with Flowport(home) as fp:
        port = free_port()
        fp.ok(
            "POST",
            "/computes",
            json={"spec": {"name": "gone", "type": "ray", "address": f"127.0.0.1:{port}"}},
        )
        fp.endpoint("lost", compute="azureml:gone")
        body = fp.ok(
            "POST",
            "/endpoints/lost/deployments",
            params={"name": "blue"},
            json={"spec": {"model": {"path": str(FLOWS / "probe")}}},
        )
        operation = fp.wait(body["operation"])
        assert operation["status"] == "Failed"
        message = operation["error"]["message"]
        assert "cannot join the Ray cluster of compute 'gone': nothing answers" in message


def test_instances_come_back_when_a_node_is_lost(ray_cluster: RayCluster, home: Path) -> None:
    """Last in the module: it kills the second node (``kill -9`` of its raylet)."""
    with Flowport(home) as fp:
        compute = {"name": "lab", "type": "ray", "address": ray_cluster.address}
        fp.ok("POST", "/computes", json={"spec": compute})
        fp.endpoint("sturdy", compute="azureml:lab")
        probes = {"initial_delay": 1, "period": 1, "failure_threshold": 3}
        shown = fp.deploy("sturdy", "red", instance_count=3, liveness_probe=probes, readiness_probe=probes)
        assert len({i["node"] for i in shown["instances"]}) == 2, (shown, ray_cluster.status())
        fp.traffic("sturdy", red=100)
        key = fp.key("sturdy")

        results: list[list[int]] = []
        stop = threading.Event()
        scorer = threading.Thread(target=lambda: results.append(score_continuously(fp, "sturdy", key, stop)))
        scorer.start()
        try:
            time.sleep(1)
            lost = ray_cluster.kill_raylet(1)
            deadline = time.monotonic() + 180
            while True:
                instances = fp.ok("GET", "/endpoints/sturdy/deployments/red")["instances"]
                back = [i for i in instances if i["ready"] and i["node"] != lost]
                if len(back) == 3:
                    break
                assert time.monotonic() < deadline, f"the instances did not come back: {instances}"
                time.sleep(1)
            time.sleep(1)
        finally:
            stop.set()
            scorer.join()
        # one request at a time: at most the one in flight on a lost instance fails
        (statuses,) = results
        assert len(statuses) > 10 and sum(code != 200 for code in statuses) <= 1, Counter(statuses)


def test_a_sealed_config_opens_only_for_its_actor() -> None:
    from cryptography.exceptions import InvalidTag

    from flowport.runtime.ray.sealing import Opener, seal

    actor, other = Opener(), Opener()
    sealed = seal(actor.public_key, SECRET.encode())
    assert SECRET.encode() not in sealed
    assert actor.open(sealed) == SECRET.encode()
    with pytest.raises(InvalidTag):
        other.open(sealed)
    with pytest.raises(InvalidTag):
        actor.open(sealed[:-1] + bytes([sealed[-1] ^ 1]))


def test_span_lines_come_whole_from_a_node_file(tmp_path: Path) -> None:
    """What the data plane pulls from an instance's span file: whole lines only, after a line too
    long to take, and after the file started over, from 0 or past where it was read."""
    from flowport.runtime.ray.actor import whole_lines

    path = tmp_path / "spans.jsonl"
    path.write_bytes(b"a1\nb22\nc3")
    assert whole_lines(path, 0, 100) == (b"a1\nb22\n", 7)
    assert whole_lines(path, 7, 100) == (b"", 7)  # c3 is still being written
    with path.open("ab") as file:
        file.write(b"\n" + b"x" * 50 + b"\nd4\n")
    assert whole_lines(path, 7, 100) == (b"c3\n" + b"x" * 50 + b"\nd4\n", 64)
    path.write_bytes(b"long" * 10 + b"\ne5\n")  # a line longer than the limit
    data, offset = whole_lines(path, 0, 8)
    assert (data, offset) == (b"", 8)
    data, offset = whole_lines(path, offset, 100)
    assert (data, offset) == (b"e5\n", 44)  # the rest of the long line dropped, never a fragment
    path.write_bytes(b"f6\n" + b"g" * 60 + b"\nh7\n")  # started over and grew past 44 in between
    assert whole_lines(path, 44, 100) == (b"h7\n", 67)
    path.write_bytes(b"i8\n")  # started over, shorter
    assert whole_lines(path, 67, 100) == (b"i8\n", 3)
    assert whole_lines(tmp_path / "gone.jsonl", 5, 100) == (b"", 5)
