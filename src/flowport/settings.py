"""Where flowport keeps its state (``FLOWPORT_HOME`` or ``~/.flowport``), private to its owner."""

from __future__ import annotations

import os
import stat
from pathlib import Path

HOME_ENV = "FLOWPORT_HOME"
PRIVATE_UMASK = 0o077
"""What flowport creates is its owner's alone: folders 0700, files 0600."""


def flowport_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".flowport").expanduser()


def runs_dir() -> Path:
    return flowport_home() / "runs"


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
