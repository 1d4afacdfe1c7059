"""The data plane outlives the control plane: scoring through kills, restarts and crashes mid-update.

Real ``flowport server`` processes; SQLite and, with FLOWPORT_TEST_DATABASE_URL, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowport.dataplane.relay import ControlRelay
from flowport.testing.threaded_server import ThreadedServer
from tests.endpoint_harness import Flowport, score_continuously

SETTLED = {"Succeeded", "Failed"}


@pytest.fixture
def flowport(home: Path, database_url: str) -> Iterator[Flowport]:
    with Flowport(home, database_url) as server:
        yield server


def settled(fp: Flowport, endpoint: str, name: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        fp.wait_until_answering()
        response = fp.api("GET", f"/endpoints/{endpoint}/deployments/{name}")
        if response.status_code == 200 and response.json()["provisioning_state"] in SETTLED:
            return response.json()
        assert time.monotonic() < deadline, f"{endpoint}/{name} never settled: {response.text}"
        time.sleep(0.1)


def test_scoring_goes_on_while_the_control_plane_is_killed(flowport: Flowport) -> None:
    fp = flowport
    fp.endpoint("steady")
    before = fp.deploy("steady", "blue")
    fp.traffic("steady", blue=100)
    key = fp.key("steady")
    old_control = fp.control_pid()

    stop = threading.Event()
    results: list[list[int]] = []
    worker = threading.Thread(target=lambda: results.append(score_continuously(fp, "steady", key, stop)))
    worker.start()
    time.sleep(0.3)
    os.kill(old_control, signal.SIGKILL)
    fp.wait_until_answering()
    time.sleep(0.3)
    stop.set()
    worker.join()

    statuses = results[0]
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests: {sorted(set(statuses))}"
    assert fp.control_pid() != old_control
    after = settled(fp, "steady", "blue")
    assert after["provisioning_state"] == "Succeeded"
    # the instances were never restarted: the new control plane found them running
    assert [i["pid"] for i in after["instances"]] == [i["pid"] for i in before["instances"]]


@pytest.mark.parametrize("crash", ["control-plane", "whole-server"])
def test_a_crash_during_an_update_never_leaves_a_transitional_state(flowport: Flowport, crash: str) -> None:
    fp = flowport
    fp.endpoint("steady")
    fp.deploy("steady", "blue")
    fp.traffic("steady", blue=100)
    body = fp.ok(
        "PATCH",
        "/endpoints/steady/deployments/blue",
        json={"set": ["environment_variables.STARTUP_SECONDS=2"]},
    )
    assert fp.ok("GET", "/endpoints/steady/deployments/blue")["provisioning_state"] == "Updating"
    if crash == "control-plane":
        os.kill(fp.control_pid(), signal.SIGKILL)
    else:
        fp.kill()
        fp.start()

    shown = settled(fp, "steady", "blue")
    assert shown["provisioning_state"] == "Failed"
    assert "stopped during this update" in shown["error"]["reason"]
    assert "STARTUP_SECONDS" not in shown["environment_variables"]  # the previous spec runs
    assert fp.ok("GET", f"/operations/{body['operation']['id']}")["error"]["code"] == "ServerRestarted"
    assert fp.score("steady", {"text": "after"}).status_code == 200
    again = fp.update("steady", "blue", "environment_variables.STARTUP_SECONDS=0")
    assert again["status"] == "Succeeded"


def test_a_crash_during_deletes_and_creates_settles_them(flowport: Flowport) -> None:
    fp = flowport
    fp.endpoint("gone")
    fp.deploy("gone", "blue")
    fp.endpoint("kept")
    created = fp.ok(
        "POST",
        "/endpoints/kept/deployments",
        params={"name": "blue"},
        json={
            "spec": {
                "model": {"path": str(Path(__file__).parent / "endpoint_flows" / "probe")},
                "environment_variables": {"STARTUP_SECONDS": "2"},
            }
        },
    )
    assert created["operation"]["status"] == "Running"
    fp.ok("DELETE", "/endpoints/gone")
    os.kill(fp.control_pid(), signal.SIGKILL)

    assert settled(fp, "kept", "blue")["provisioning_state"] == "Succeeded"
    deadline = time.monotonic() + 60
    while fp.api("GET", "/endpoints/gone").status_code != 404:
        assert time.monotonic() < deadline, "the interrupted endpoint deletion was never finished"
        time.sleep(0.1)
    assert fp.http.post(f"{fp.url}/endpoints/gone/score", json={}).status_code == 404


def test_the_control_plane_paths_answer_503_while_it_is_down(tmp_path: Path) -> None:
    relay = ControlRelay(str(tmp_path / "nobody-listens.sock"))
    with ThreadedServer(relay) as server:
        response = httpx.get(f"{server.url}/api/v1/endpoints")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "ControlPlaneUnavailable"
    asyncio.run(relay.aclose())


def test_a_taken_port_is_one_clear_error(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {**os.environ, "FLOWPORT_HOME": str(home)}
        for extra in ([], ["--detach"]):
            done = subprocess.run(
                [sys.executable, "-m", "flowport.cli.main", "server", "--port", port, *extra],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert done.returncode == 1, done
            assert "the port is in use" in done.stderr and "--port" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr


def test_the_relay_keeps_each_answer_with_its_request(flowport: Flowport) -> None:
    fp = flowport
    auth = f"authorization: Bearer {fp.token}\r\n".encode()
    body = b'{"spec": {"name": "expecting"}}'
    expecting = (
        b"POST /api/v1/endpoints HTTP/1.1\r\nhost: example.test\r\ncontent-type: application/json\r\n"
        + auth
        + b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body
    )
    with socket.create_connection(("127.0.0.1", fp.port), timeout=30) as sock:
        sock.sendall(expecting)
        time.sleep(0.5)
        sock.sendall(b"GET /api/v1/endpoints/expecting HTTP/1.1\r\nhost: example.test\r\n" + auth + b"\r\n")
        answers = b""
        while answers.count(b"HTTP/1.1 ") - answers.count(b"HTTP/1.1 100") < 2 or not answers.endswith(b"}"):
            answers += sock.recv(65536)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)
    assert statuses in ([b"201", b"200"], [b"100", b"201", b"200"]), answers[:500]

    head = fp.http.head(f"{fp.url}/api/v1/health")
    assert head.status_code == 200 and head.content == b""
    moved = fp.api("GET", "/endpoints/", headers={"host": "example.test:9"}, follow_redirects=False)
    assert (moved.status_code, moved.headers["location"]) == (307, "http://example.test:9/api/v1/endpoints")
    big = fp.api("POST", "/endpoints", content=b"x" * (3 * 1024 * 1024))
    assert (big.status_code, big.json()["error"]["code"]) == (413, "RequestTooLarge")
    assert fp.api("GET", "/endpoints/expecting").status_code == 200  # the server is fine after all that


def test_only_the_relay_takes_the_client_from_a_trusted_proxys_headers() -> None:
    """uvicorn's X-Forwarded-* handling applies to the control plane's paths (the relay sends the
    client's address on); the scoring path, which never reads it, skips that work."""
    from starlette.types import ASGIApp, Receive, Scope, Send

    from flowport.dataplane.server import public_app

    seen: dict[str, dict[str, object]] = {}

    def recorder(name: str) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            seen[name] = {"client": scope["client"], "scheme": scope["scheme"]}

        return app

    gateway = recorder("gateway")
    app = public_app(gateway, recorder("relay"), "admin", "127.0.0.1")  # type: ignore[arg-type]
    headers = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]
    for path in ("/api/v1/health", "/endpoints/e/score"):
        scope = {
            "type": "http",
            "path": path,
            "client": ("127.0.0.1", 5000),
            "scheme": "http",
            "headers": headers,
        }
        asyncio.run(app(scope, None, None))  # type: ignore[arg-type]
    assert seen["relay"] == {"client": ("203.0.113.7", 0), "scheme": "https"}
    assert seen["gateway"] == {"client": ("127.0.0.1", 5000), "scheme": "http"}

    untrusted = public_app(gateway, recorder("relay"), "admin", "10.0.0.1")  # type: ignore[arg-type]
    scope = {
        "type": "http",
        "path": "/api/v1/x",
        "client": ("127.0.0.1", 5000),
        "scheme": "http",
        "headers": headers,
    }
    asyncio.run(untrusted(scope, None, None))  # type: ignore[arg-type]
    assert seen["relay"] == {"client": ("127.0.0.1", 5000), "scheme": "http"}
