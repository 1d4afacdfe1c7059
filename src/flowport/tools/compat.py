"""Let flows that import ``promptflow`` run without prompt flow installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SHIM_ROOT = str(Path(__file__).parent / "_pfshim")


def install_promptflow_shim() -> bool:
    """Put the stand-in on sys.path unless the real package is importable. True if installed."""
    if SHIM_ROOT in sys.path:
        return True
    if importlib.util.find_spec("promptflow") is not None:
        return False
    sys.path.append(SHIM_ROOT)
    return True
