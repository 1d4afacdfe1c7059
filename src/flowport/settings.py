"""Where flowport keeps its state: ``FLOWPORT_HOME`` or ``~/.flowport``."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "FLOWPORT_HOME"


def flowport_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".flowport").expanduser()


def runs_dir() -> Path:
    return flowport_home() / "runs"
