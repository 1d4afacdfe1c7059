"""Where flowport keeps its state (``FLOWPORT_HOME`` or ``~/.flowport``), private to its owner."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

HOME_ENV = "FLOWPORT_HOME"
PRIVATE_UMASK = 0o077
"""What flowport creates is its owner's alone: folders 0700, files 0600."""


def flowport_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".flowport").expanduser()


def runs_dir() -> Path:
    return flowport_home() / "runs"


ADMIN_TOKEN_ENV = "FLOWPORT_ADMIN_TOKEN"
ADMIN_TOKEN_FILE = "admin_token"
SERVER_FILE = "server.json"
"""What the running ``flowport server`` wrote: its URL and process id."""


def admin_token(home: Path) -> str:
    """The admin token: ``FLOWPORT_ADMIN_TOKEN``, else a file created on first use (mode 0600)."""
    env = os.environ.get(ADMIN_TOKEN_ENV)
    if env:
        return env
    path = home / ADMIN_TOKEN_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def instance_log_dirs(home: Path) -> list[Path]:
    """Where the instances' logs and span files are (``<endpoint>/<deployment>/<instance>.*``):
    the local runtime's folder, then the Ray runtime's."""
    return [home / "runtime" / "logs", home / "runtime" / "ray" / "logs"]


def run_dir(home: Path) -> Path:
    """The private folder of the server's sockets (the data plane's and the control plane's)."""
    return home / "run"


def keep_private() -> None:
    """Set the process's umask (inherited by its children) so nothing it creates is shared."""
    os.umask(PRIVATE_UMASK)


def private_home(home: Path) -> Path:
    """Create ``home`` 0700, or make an existing one 0700: nothing under it is reachable by others."""
    keep_private()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    return home


def make_private(top: Path) -> None:
    """Strip group and other bits under ``top`` (copies keep their source's modes, whatever the umask)."""
    for folder, dirs, files in os.walk(top):
        for path in (folder, *(os.path.join(folder, name) for name in (*dirs, *files))):
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                os.chmod(path, stat.S_IMODE(mode) & 0o700)
