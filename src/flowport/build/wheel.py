"""flowport itself as a wheel, for an image that cannot reach this machine's source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from flowport.build.context import BuildError

REPRODUCIBLE_EPOCH = "315532800"
"""1980-01-01, the earliest time a zip entry holds: every wheel entry gets it."""
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def source_checkout() -> Path | None:
    """The checkout this flowport runs from (``src/flowport`` under a ``pyproject.toml``), if any."""
    import flowport

    root = Path(flowport.__file__).resolve().parents[2]
    project = root / "pyproject.toml"
    if project.is_file() and 'name = "flowport"' in project.read_text(encoding="utf-8"):
        return root
    return None


def flowport_wheel(target: Path, given: Path | None = None) -> Path:
    """A wheel of flowport in ``target``: ``given`` as is, else built from the source checkout.

    The build runs on a copy of the checkout (``pyproject.toml``, ``README.md``, ``src/``), so
    the checkout gets no ``build/`` or ``*.egg-info`` folder.
    """
    target.mkdir(parents=True, exist_ok=True)
    if given is not None:
        if not given.is_file() or not given.name.startswith("flowport-") or given.suffix != ".whl":
            raise BuildError(f"--flowport-wheel {given} is not a flowport wheel file (flowport-*.whl)")
        return given
    root = source_checkout()
    if root is None:
        raise BuildError(
            "flowport is not installed from a source checkout, so no wheel can be built here; "
            "give one with --flowport-wheel PATH (pip wheel --no-deps <checkout>)"
        )
    with tempfile.TemporaryDirectory(prefix="flowport-wheel-") as scratch:
        copy = Path(scratch) / "flowport"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, copy / name)
        shutil.copytree(root / "src", copy / "src", ignore=_SKIP)
        out = Path(scratch) / "dist"
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(copy)]
        # the same source gives the same wheel bytes, so an image build reuses its pip layer
        env = {**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH}
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        built = sorted(out.glob("flowport-*.whl"))
        if done.returncode != 0 or not built:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise BuildError(f"building flowport's wheel from {root} failed (pip wheel):\n{tail}")
        wheel = target / built[0].name
        shutil.copyfile(built[0], wheel)
    return wheel
