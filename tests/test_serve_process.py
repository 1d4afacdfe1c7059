"""``flowport flow serve`` as a real process: start, serve, drain on SIGTERM, several workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import FLOWS, free_port
from tests.http_probe import EIGHT_MB, big_header, many_headers, send_head

SLOW = Path(__file__).parent / "serving_flows" / "slow"


def start(flow: Path, home: Path, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = ["flow", "serve", "--source", str(flow), "--port", str(port), *args]
    process = subprocess.Popen(
        [sys.executable, "-m", "flowport.cli.main", *command],
        env={**os.environ, "FLOWPORT_HOME": str(home), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"server did not start: {process.communicate()[1].decode()[-2000:]}")


def test_sigterm_finishes_in_flight_requests_then_exits(tmp_path: Path) -> None:
    process, url = start(SLOW, tmp_path, FLOWPORT_REQUEST_TIMEOUT_MS="10000")
    results: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: results.append(httpx.post(f"{url}/score", json={"seconds": 1.5}, timeout=10))
    )
    worker.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    worker.join(15)
    assert results and results[0].status_code == 200
    assert results[0].json() == {"slept": 1.5}
    # uvicorn re-raises the signal once drained, so the exit status says SIGTERM ended it.
    assert process.wait(15) in (0, -signal.SIGTERM)
    try:
        httpx.get(f"{url}/health", timeout=1)
        raise AssertionError("the server still answers after it exited")
    except httpx.TransportError:
        pass


def test_several_workers_share_the_port(tmp_path: Path) -> None:
    process, url = start(FLOWS / "three_node_python", tmp_path, PROMPTFLOW_WORKER_NUM="2")
    try:
        for n in range(20):
            response = httpx.post(f"{url}/score", json={"text": f"w {n}"})
            assert response.json() == {"result": f"W {n} (2 words)"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def test_bad_settings_fail_at_start_with_a_clear_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowport.cli.main", "flow", "serve", "--source", str(SLOW), "--port", "1"],
        env={**os.environ, "FLOWPORT_HOME": str(tmp_path), "FLOWPORT_REQUEST_TIMEOUT_MS": "never"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "FLOWPORT_REQUEST_TIMEOUT_MS must be a whole number" in done.stderr


def test_process_environment_wins_over_the_flow_and_flags_win_over_both(tmp_path: Path) -> None:
    process, url = start(
        FLOWS / "env_vars",
        tmp_path,
        "--environment-variables",
        "FLOWPORT_LITERAL=from-flag",
        FLOWPORT_OVERRIDDEN="from-process",
        FLOWPORT_LITERAL="from-process",
    )
    try:
        env = httpx.post(f"{url}/score", json={}).json()["env"]
        assert env["FLOWPORT_OVERRIDDEN"] == "from-process"  # flow.dag.yaml says from-yaml
        assert env["FLOWPORT_LITERAL"] == "from-flag"
        assert env["FLOWPORT_NUMBER"] == "42"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)


def test_a_flow_with_connections_is_served_without_the_store_in_the_process(
    home: Path, openai_connection: object
) -> None:
    """The CLI reads the connections, then execs an instance that is handed them on stdin."""
    chat = Path(__file__).parents[1] / "src" / "flowport" / "examples" / "chat_basic"
    process, url = start(chat, home, OPEN_AI_CONNECTION_API_KEY="overridden-key")
    try:
        answer = httpx.post(f"{url}/score", json={"question": "who holds the key?"}, timeout=10)
        assert answer.json()["answer"] == "Echo: who holds the key?"
        assert b"flowport.runtime.instance" in Path(f"/proc/{process.pid}/cmdline").read_bytes()
        mapped = Path(f"/proc/{process.pid}/maps").read_text()
        assert "sqlalchemy" not in mapped and "cryptography" not in mapped
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) in (0, -signal.SIGTERM)


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``flowport server`` as a real process on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flowport.cli.main", "server", "--port", str(port)],
        env={**os.environ, "FLOWPORT_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server did not start: {process.communicate()[1].decode()[-2000:]}")


@pytest.mark.parametrize("which", ["flow serve", "server"])
def test_oversized_request_heads_get_431_and_the_connection_closes(tmp_path: Path, which: str) -> None:
    if which == "server":
        process, url = start_server(tmp_path / "home")
    else:
        process, url = start(FLOWS / "three_node_python", tmp_path)
    port = int(url.rsplit(":", 1)[1])
    path = b"/api/v1/health" if which == "server" else b"/health"
    try:
        for head in (big_header(path), big_header(path, 20 * 1024), many_headers(path, 40, 2000)):
            answer, sent = send_head("127.0.0.1", port, head)
            status, _, rest = answer.partition(b"\r\n")
            assert status == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:200]
            headers, _, body = rest.partition(b"\r\n\r\n")
            assert b"connection: close" in headers.lower().split(b"\r\n")
            assert b"RequestHeaderFieldsTooLarge" in body
            assert sent < EIGHT_MB  # the server stopped reading and closed
        # A head within the limits (about 40 KB, lines of 2 KB) is served.
        answer, _ = send_head("127.0.0.1", port, many_headers(path, 20, 2000))
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        # A large body that arrives with its head in one write is body, not head.
        body = b'{"text": "' + b"w " * 1_000_000 + b'"}'
        target = b"/endpoints/none/score" if which == "server" else b"/score"
        head = b"POST %s HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n" % target
        head += b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
        answer, _ = send_head("127.0.0.1", port, head + body)
        assert answer.startswith(b"HTTP/1.1 404" if which == "server" else b"HTTP/1.1 200"), answer[:300]
        # Pipelined: a read that ends a large body and starts the next head is not all head.
        first = b"POST %s HTTP/1.1\r\nhost: probe\r\ncontent-length: 100000\r\n\r\n" % target
        second = b"GET %s HTTP/1.1\r\nhost: probe\r\n" % path
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(first + b"x" * 100_000 + second)
            time.sleep(0.2)
            sock.sendall(b"connection: close\r\n\r\n")
            answers = b""
            while chunk := sock.recv(65536):
                answers += chunk
        assert answers.count(b"HTTP/1.1 ") == 2 and b" 431 " not in answers, answers[:300]
        # One kept-alive connection: heads never add up across requests, an unread body is no head.
        padding = {"x-padding": "p" * 4000}
        with httpx.Client(base_url=url, timeout=30) as client:
            for size in [10] * 30 + [100_000, 1000, 100_000, 100_000]:
                answered = client.post(target.decode(), content=b"x" * size, headers=padding)
                assert answered.status_code in (200, 404), (size, answered.text[:200])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
