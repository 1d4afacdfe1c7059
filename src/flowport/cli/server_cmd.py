"""``flowport server``: the control plane, gateway and local runtime in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from flowport.cli.common import fail
from flowport.settings import flowport_home

STARTUP_SECONDS = 60


def server(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    detach: bool = typer.Option(
        False, "--detach", help="Run in the background; logs go to ~/.flowport/server.log."
    ),
    stop: bool = typer.Option(False, "--stop", help="Stop the server running in the background."),
) -> None:
    """Start flowport: REST API at /api/v1, scoring at /endpoints/{name}/score."""
    home = flowport_home()
    if stop:
        stop_server(home)
        return
    base_url = os.environ.get("FLOWPORT_PUBLIC_URL") or f"http://{host}:{port}"
    if detach:
        start_detached(home, host, port, base_url)
        return
    import uvicorn

    from flowport.control.server import ADMIN_TOKEN_FILE, build_server
    from flowport.http_limits import uvicorn_options

    built = build_server(home, base_url)
    typer.echo(f"flowport server at {base_url}", err=True)
    typer.echo(f"  REST API   {base_url}/api/v1 (OpenAPI: {base_url}/api/v1/openapi.json)", err=True)
    typer.echo(f"  scoring    {base_url}/endpoints/<endpoint>/score", err=True)
    typer.echo(f"  admin token in {home / ADMIN_TOKEN_FILE}", err=True)
    typer.echo(f"  studio     {base_url}/", err=True)
    link = f"{base_url}/api/v1/sessions/redeem?code={built.sessions.login_code()}"
    typer.echo(f"  sign in to the studio with this one-time link (10 minutes):\n    {link}", err=True)
    uvicorn.run(
        built.app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
        **uvicorn_options(),
    )


def start_detached(home: Path, host: str, port: int, base_url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    command = [sys.executable, "-m", "flowport.cli.main", "server", "--host", host, "--port", str(port)]
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            fail("the server exited while starting:\n" + "\n".join(tail))
        try:
            if httpx.get(f"{base_url}/api/v1/health", timeout=1).status_code == 200:
                typer.echo(f"flowport server running at {base_url} (pid {process.pid}, log {log})", err=True)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.terminate()
    fail(f"the server did not answer within {STARTUP_SECONDS} s; see {log}")


def stop_server(home: Path) -> None:
    try:
        pid = json.loads((home / "server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        fail(f"no running server recorded in {home / 'server.json'}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        (home / "server.json").unlink(missing_ok=True)
        fail(f"server process {pid} is not running")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            typer.echo(f"stopped the server (pid {pid})", err=True)
            return
        time.sleep(0.1)
    fail(f"server process {pid} did not stop within 60 s")
