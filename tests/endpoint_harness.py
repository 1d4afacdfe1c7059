"""A real flowport server for end-to-end tests: API, gateway and local instance processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

FLOWS = Path(__file__).parent / "endpoint_flows"
AZURE = Path(__file__).parents[1] / "src" / "flowport" / "examples" / "azure"


class Flowport:
    """``with Flowport(home) as fp: fp.api("GET", "/endpoints")``: ``flowport server`` as a real process.

    ``restart()`` keeps the port; ``control_pid()`` is the control plane's child process.
    """

    def __init__(self, home: Path, database_url: str | None = None) -> None:
        self.home = home
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home.parent / f"{home.name}-server.log"  # outside the home: its modes are tested
        self.token = ""
        self.http = httpx.Client(timeout=60)

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "FLOWPORT_HOME": str(self.home)}
        env.pop("FLOWPORT_URL", None)
        if self.database_url:
            env["FLOWPORT_DATABASE_URL"] = self.database_url
        return env

    def start(self) -> Flowport:
        self.home.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "flowport.cli.main", "server", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.wait_until_answering()
        self.token = os.environ.get("FLOWPORT_ADMIN_TOKEN") or (self.home / "admin_token").read_text().strip()
        return self

    def wait_until_answering(self, timeout: float = 60) -> None:
        """Until the control plane answers through the public port, its recovery done."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"flowport server exited:\n{self.log.read_text()[-3000:]}")
            try:
                health = self.http.get(f"{self.url}/api/v1/health", timeout=1)
                if health.status_code == 200 and not health.json()["recovering"]:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (
                f"flowport server did not answer:\n{self.log.read_text()[-3000:]}"
            )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def kill(self) -> None:
        """SIGKILL the server (its control plane and instances die with it)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def control_pid(self) -> int:
        """The control plane's process id (a child of the server)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        for child in children:
            if "flowport.control.process" in Path(f"/proc/{child}/cmdline").read_text():
                return int(child)
        raise AssertionError("the server has no control plane process")

    def login_code(self) -> str:
        url = self.ok("POST", "/sessions/login-link")["url"]
        return url.rpartition("code=")[2]

    def connection(self, name: str) -> Any:
        """A stored connection, secrets decrypted, read from the store as the server sees it."""
        from flowport.connections import Cipher, ConnectionService, load_or_create_key
        from flowport.store import ConnectionRows, open_database

        db = open_database(self.home, self.database_url)
        try:
            return ConnectionService(ConnectionRows(db), Cipher(load_or_create_key(self.home))).get(name)
        finally:
            db.dispose()

    @contextlib.contextmanager
    def documents(self, table: str) -> Iterator[Any]:
        """The store's ``Documents`` of ``table`` (``endpoints``, ``deployments``...), opened here."""
        from flowport.store import Documents, open_database, tables

        db = open_database(self.home, self.database_url)
        try:
            yield Documents(db, getattr(tables, table))
        finally:
            db.dispose()

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


def score_continuously(fp: Flowport, endpoint: str, key: str, stop: threading.Event) -> list[int]:
    """Statuses of requests sent one after another until ``stop`` (run it in a thread)."""
    statuses: list[int] = []

    def run() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.post(
                    f"{fp.url}/endpoints/{endpoint}/score",
                    json={"text": "x"},
                    headers={"authorization": f"Bearer {key}"},
                )
                statuses.append(response.status_code)

    thread = threading.Thread(target=run)
    thread.start()
    stop.wait()
    thread.join()
    return statuses
