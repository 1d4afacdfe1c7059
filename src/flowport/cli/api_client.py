"""How the CLI reaches a flowport server: ``FLOWPORT_URL`` or the running server's
``~/.flowport/server.json``, with ``FLOWPORT_ADMIN_TOKEN`` or ``~/.flowport/admin_token``."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import httpx
import typer

from flowport.cli.common import fail
from flowport.settings import ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE, SERVER_FILE, flowport_home

URL_ENV = "FLOWPORT_URL"
POLL_SECONDS = 0.2
WAIT_SECONDS = 120.0
"""How long a call waits for a server that answers 503 (starting, recovering, restarting)."""


class ApiClient:
    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.http = httpx.Client(
            base_url=f"{self.url}/api/v1", headers={"authorization": f"Bearer {token}"}, timeout=timeout
        )

    @classmethod
    def discover(cls) -> ApiClient:
        home = flowport_home()
        url = os.environ.get(URL_ENV)
        if not url:
            try:
                url = json.loads((home / SERVER_FILE).read_text())["url"]
            except (OSError, ValueError, KeyError):
                fail(
                    "no flowport server found: start one with 'flowport server --detach' "
                    f"or set {URL_ENV} to its address"
                )
        token = os.environ.get(ADMIN_TOKEN_ENV)
        if not token:
            try:
                token = (home / ADMIN_TOKEN_FILE).read_text().strip()
            except OSError:
                where = home / ADMIN_TOKEN_FILE
                fail(f"no admin token: set {ADMIN_TOKEN_ENV} or run on the server's machine ({where})")
        return cls(url, token)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; an error answer is printed to stderr and exits non-zero.

        While a server that just started brings its deployments back (503 ``Recovering``), or
        its control plane restarts, the call waits and tries again, up to ``WAIT_SECONDS``.
        """
        deadline = time.monotonic() + WAIT_SECONDS
        told = False
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                fail(f"cannot reach the flowport server at {self.url}: {exc}")
            if response.status_code != 503 or time.monotonic() > deadline:
                break
            if not told:
                typer.echo(f"waiting: {_message(response)}", err=True)
                told = True
            time.sleep(float(response.headers.get("retry-after") or 1))
        if response.status_code >= 400:
            report_error(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def delete(self, path: str, what: str, no_wait: bool) -> None:
        """DELETE a resource, then follow its operation (or print it with ``--no-wait``)."""
        operation = self.call("DELETE", path)["operation"]
        if no_wait:
            typer.echo(json.dumps(operation, indent=2))
            return
        self.wait(operation, what)

    def wait(self, operation: dict[str, Any], what: str) -> dict[str, Any]:
        """Follow an operation to its end, with a progress line on stderr; a failure exits 1."""
        started = time.monotonic()
        interactive = sys.stderr.isatty()
        while operation["status"] == "Running":
            if interactive:
                elapsed = time.monotonic() - started
                typer.echo(f"\r{what}: Running ({elapsed:.0f} s)", err=True, nl=False)
            time.sleep(POLL_SECONDS)
            operation = self.call("GET", f"/operations/{operation['id']}")
        elapsed = time.monotonic() - started
        if interactive:
            typer.echo("\r", err=True, nl=False)
        typer.echo(f"{what}: {operation['status']} ({elapsed:.1f} s)", err=True)
        if operation["status"] != "Succeeded":
            error = operation.get("error") or {}
            fail(f"{what} failed: {error.get('message', 'no reason recorded')}")
        return operation


def _error(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {"message": response.text}
    return error if isinstance(error, dict) else {"message": str(error)}


def _message(response: httpx.Response) -> str:
    return _error(response).get("message") or response.reason_phrase


def report_error(response: httpx.Response) -> None:
    message = _message(response)
    code = _error(response).get("code")
    fail(
        f"{message}"
        + (f" [{code}, HTTP {response.status_code}]" if code else f" [HTTP {response.status_code}]")
    )


def print_notes(notes: list[str]) -> None:
    """Fields that do not apply on flowport, reported once when a file is read."""
    for note in notes or []:
        typer.echo(f"note: {note}", err=True)
