"""What flow code can see of the control plane: run as an attacker's tool would."""

import os
import sys
from pathlib import Path

from promptflow.core import tool


def _read(path: Path) -> str:
    try:
        return f"read {len(path.read_bytes())} bytes"
    except OSError as exc:
        return type(exc).__name__


def _list(path: Path) -> str:
    try:
        return f"listed {len(os.listdir(path))} entries"
    except OSError as exc:
        return type(exc).__name__


@tool
def snoop(home: str, server_pid: int, say: str) -> dict:
    """Reports the environment and what it could read; prints ``say`` to its log."""
    if say:
        print(say, flush=True)
        print(say, file=sys.stderr, flush=True)
    root = Path(home)
    return {
        "environ": dict(os.environ),
        "uid": os.getuid(),
        "home_listing": _list(root),
        "secret_key": _read(root / "secret.key"),
        "admin_token": _read(root / "admin_token"),
        "database": _read(root / "flowport.db"),
        "server_environ": _read(Path(f"/proc/{server_pid}/environ")),
    }
