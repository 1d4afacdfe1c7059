"""``flowport server``: the data plane on the public port, the control plane its child process."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from flowport.cli.common import fail
from flowport.settings import ADMIN_TOKEN_FILE, SERVER_FILE, flowport_home, run_dir

STARTUP_SECONDS = 60
STOP_SECONDS = 120
"""Requests finish (30 s), the control plane stops (15 s), instances drain (30 s): with room."""


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
    from flowport.dataplane.server import run
    from flowport.dataplane.sockets import HomeInUse, lock_home

    home.mkdir(parents=True, exist_ok=True)
    try:
        lock = lock_home(run_dir(home))
    except HomeInUse as exc:
        fail(f"{exc}; stop it with `flowport server --stop`, or set FLOWPORT_HOME to another folder")
    listener = listen(host, port)
    typer.echo(f"flowport server at {base_url}", err=True)
    typer.echo(f"  REST API   {base_url}/api/v1 (OpenAPI: {base_url}/api/v1/openapi.json)", err=True)
    typer.echo(f"  scoring    {base_url}/endpoints/<endpoint>/score", err=True)
    typer.echo(f"  admin token in {home / ADMIN_TOKEN_FILE}", err=True)
    typer.echo(f"  studio     {base_url}/", err=True)
    with lock:
        code = run(home, listener, base_url)
    raise typer.Exit(code)


def listen(host: str, port: int) -> socket.socket:
    """The public socket, bound and listening, or one clear line on why it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fail(
                f"cannot listen on {host}:{port}: the port is in use (another flowport server? "
                "stop it with `flowport server --stop`); choose another with --port"
            )
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return sock


def start_detached(home: Path, host: str, port: int, base_url: str) -> None:
    """Start the server in the background and return once it answers, or say why it did not."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    command = [sys.executable, "-m", "flowport.cli.main", "server", "--host", host, "--port", str(port)]
    with log.open("ab") as handle:
        start = handle.tell()
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with log.open("rb") as handle:
                handle.seek(start)
                output = handle.read().decode(errors="replace").strip().splitlines()
            fail(
                output[-1].removeprefix("error: ")
                if output
                else f"the server exited with code {process.returncode}"
            )
        if _running_pid(home) == process.pid and _answers(base_url):
            typer.echo(f"flowport server running at {base_url} (pid {process.pid}, log {log})", err=True)
            return
        time.sleep(0.1)
    process.terminate()
    fail(f"the server did not answer within {STARTUP_SECONDS} s; see {log}")


def _running_pid(home: Path) -> int | None:
    try:
        return int(json.loads((home / SERVER_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_flowport(pid: int) -> bool:
    """The recorded pid still runs ``flowport ... server`` (a pid can be reused after a kill -9)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"server" in command and any(b"flowport" in part for part in command)


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/api/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop_server(home: Path) -> None:
    pid = _running_pid(home)
    if pid is None or not _is_flowport(pid):
        (home / SERVER_FILE).unlink(missing_ok=True)
        fail(f"no flowport server is running for {home} (nothing recorded, or its process is gone)")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        (home / SERVER_FILE).unlink(missing_ok=True)
        fail(f"server process {pid} is not running")
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            typer.echo(f"stopped the server (pid {pid})", err=True)
            return
        time.sleep(0.1)
    fail(f"server process {pid} did not stop within {STOP_SECONDS} s; its log says why")
