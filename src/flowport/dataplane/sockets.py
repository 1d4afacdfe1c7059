"""The server's private Unix sockets: bound 0600 in the 0700 ``FLOWPORT_HOME/run`` folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import IO

BACKLOG = 2048


def listen_unix(path: Path) -> socket.socket:
    """A listening socket at ``path`` only its owner can connect to (uvicorn would make it 0666)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a process that was killed (the home's lock says none runs)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    return sock


class HomeInUse(Exception):
    """Another ``flowport server`` runs on this ``FLOWPORT_HOME``."""


def lock_home(run: Path) -> IO[str]:
    """Hold ``run/server.lock`` for the life of the returned file: one server per home."""
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle = open(run / "server.lock", "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise HomeInUse(f"another flowport server (pid {holder}) already uses {run.parent}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
