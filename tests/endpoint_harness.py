"""A real flowport server for end-to-end tests: API, gateway and local instance processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from flowport.control.server import build_server
from flowport.runtime.base import Runtime
from flowport.testing.threaded_server import ThreadedServer
from tests.conftest import free_port

FLOWS = Path(__file__).parent / "endpoint_flows"
AZURE = Path(__file__).parents[1] / "src" / "flowport" / "examples" / "azure"


class Flowport:
    """``with Flowport(home) as fp: fp.api("GET", "/endpoints")``; ``restart()`` keeps the port."""

    def __init__(
        self, home: Path, database_url: str | None = None, runtime: Callable[[], Runtime] | None = None
    ) -> None:
        self.home = home
        self.database_url = database_url
        self.new_runtime = runtime
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedServer | None = None
        self.token = ""
        self.http = httpx.Client(timeout=60)

    def start(self) -> Flowport:
        if self.database_url:
            os.environ["FLOWPORT_DATABASE_URL"] = self.database_url
        built = build_server(self.home, self.url, self.new_runtime() if self.new_runtime else None)
        self.token = built.token
        self.sessions = built.sessions
        self.control = built.control
        self.server = ThreadedServer(built.app, port=self.port, lifespan="on").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=30)
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Flowport:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.http.close()

    # -- the API ----------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return self.http.request(method, f"{self.url}/api/v1{path}", headers=headers, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def wait(self, operation: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while operation["status"] == "Running":
            assert time.monotonic() < deadline, f"operation {operation} did not finish"
            time.sleep(0.05)
            operation = self.ok("GET", f"/operations/{operation['id']}")
        return operation

    def endpoint(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.ok("POST", "/endpoints", json={"spec": {"name": name, **fields}})["endpoint"]

    def deploy(self, endpoint: str, name: str, expect: str = "Succeeded", **fields: Any) -> dict[str, Any]:
        spec = {"model": {"path": str(FLOWS / "probe")}, **fields}
        body = self.ok(
            "POST", f"/endpoints/{endpoint}/deployments", params={"name": name}, json={"spec": spec}
        )
        operation = self.wait(body["operation"])
        assert operation["status"] == expect, operation
        return self.ok("GET", f"/endpoints/{endpoint}/deployments/{name}")

    def update(self, endpoint: str, name: str, *assignments: str) -> dict[str, Any]:
        body = self.ok("PATCH", f"/endpoints/{endpoint}/deployments/{name}", json={"set": list(assignments)})
        return self.wait(body["operation"])

    def traffic(self, endpoint: str, **shares: int) -> httpx.Response:
        return self.api("PUT", f"/endpoints/{endpoint}/traffic", json={"traffic": shares})

    def key(self, endpoint: str, which: str = "primaryKey") -> str:
        return self.ok("POST", f"/endpoints/{endpoint}/credentials")[which]

    # -- scoring ----------------------------------------------------------------------------

    def score(self, endpoint: str, body: Any, key: str | None = None, **headers: str) -> httpx.Response:
        secret = key if key is not None else self.key(endpoint)
        auth = {"authorization": f"Bearer {secret}"} if secret else {}
        return self.http.post(
            f"{self.url}/endpoints/{endpoint}/score", json=body, headers={**auth, **headers}
        )

    # -- the CLI ----------------------------------------------------------------------------

    def cli(
        self, *args: str, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "FLOWPORT_URL": self.url, "FLOWPORT_ADMIN_TOKEN": self.token}
        done = subprocess.run(
            [sys.executable, "-m", "flowport.cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=120,
        )
        if check:
            assert done.returncode == 0, f"flowport {' '.join(args)}\n{done.stdout}\n{done.stderr}"
        return done
