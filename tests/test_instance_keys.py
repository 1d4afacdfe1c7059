"""An instance on a network address answers only requests that carry its deployment's key."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowport.instance_keys import HEADER, KeyedApp, derive
from flowport.runtime.base import InstanceConfig
from tests.conftest import free_port

FLOWS = Path(__file__).parent / "flows"


def test_a_key_belongs_to_one_deployment_of_one_secret() -> None:
    key = derive(b"s" * 32, "shop", "blue")
    assert key == derive(b"s" * 32, "shop", "blue") and len(key) == 64
    assert len({key, derive(b"s" * 32, "shop", "green"), derive(b"t" * 32, "shop", "blue")}) == 3
    assert derive(b"s" * 32, "a", "b\0c") != derive(b"s" * 32, "a\0b", "c")


async def test_the_app_behind_the_key_never_sees_it() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["headers"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    keyed = KeyedApp(app, "k" * 64)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=keyed), base_url="http://i") as client:
        assert (
            await client.get("/score", headers={HEADER.decode(): "k" * 64, "x-a": "1"})
        ).status_code == 204
        refused = await client.get("/score", headers={HEADER.decode(): "k" * 63})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "Unauthorized"
    assert len(seen) == 1
    assert HEADER not in {name for name, _ in seen[0]} and (b"x-a", b"1") in seen[0]


@pytest.fixture
def keyed_instance(tmp_path: Path) -> Iterator[str]:
    """``python -m flowport.runtime.instance`` on a TCP port (as on a Ray node), with a key."""
    port = free_port()
    config = InstanceConfig(source=str(FLOWS / "three_node_python"), access_key="secret-key-" + "0" * 53)
    process = subprocess.Popen(
        [sys.executable, "-m", "flowport.runtime.instance", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(config.to_json()).encode())
    process.stdin.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (
                    httpx.get(f"{url}/health", headers={HEADER.decode(): config.access_key}).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the instance never answered"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_an_instance_with_a_key_refuses_every_path_without_it(keyed_instance: str) -> None:
    key = {HEADER.decode(): "secret-key-" + "0" * 53}
    assert httpx.post(f"{keyed_instance}/score", json={"text": "a b"}, headers=key).json() == {
        "result": "A B (2 words)"
    }
    for method, path in (
        ("POST", "/score"),
        ("GET", "/health"),
        ("GET", "/swagger.json"),
        ("GET", "/metrics"),
    ):
        for headers in ({}, {HEADER.decode(): "secret-key-" + "1" * 53}):
            answer = httpx.request(method, f"{keyed_instance}{path}", json={"text": "a"}, headers=headers)
            assert answer.status_code == 401, (method, path, headers)
            assert "result" not in answer.text
