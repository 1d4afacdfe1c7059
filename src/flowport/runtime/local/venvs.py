"""Virtualenvs for flows with a ``requirements.txt``, built once per distinct file content."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from flowport.runtime.base import DeploymentFailed
from flowport.runtime.local.isolation import INHERITED, INHERITED_PREFIXES
from flowport.settings import make_private

READY_MARK = ".flowport-ready"
PARENT_PTH = "_flowport_parent.pth"
TAIL_LINES = 30

_INSPECT = (
    "import importlib.util, json, site, sys; print(json.dumps({"
    "'site': site.getsitepackages(), 'pip': importlib.util.find_spec('pip') is not None}))"
)
_PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"


Progress = Callable[[str], None]
"""Told each line of output of an install as it comes (the deployment's provisioning log)."""


async def _run(*args: str, cwd: Path | None = None, progress: Progress | None = None) -> tuple[int, str]:
    """Run a command; its exit code and its output (stdout and stderr together)."""
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**_build_environment(), "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    async for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        lines.append(line)
        if progress is not None:
            progress(line)
    await process.wait()
    assert process.returncode is not None
    return process.returncode, "\n".join(lines)


def _build_environment() -> dict[str, str]:
    """What pip sees: the instances' allow-list, pip's own settings and the server's ``HOME`` (pip's
    cache), never the control plane's variables (a requirement's build script runs in it)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in INHERITED or name.startswith((*INHERITED_PREFIXES, "PIP_")) or name == "HOME"
    }


def _tail(output: str) -> list[str]:
    return output.splitlines()[-TAIL_LINES:]


class VenvCache:
    """``<root>/<first 16 hex of sha256(requirements)>``: a venv on top of the server's packages.

    The venv sees the server's own environment (so ``flowport`` imports) through
    ``--system-site-packages`` and, since the server usually runs in a venv itself (whose
    packages ``--system-site-packages`` does not reach), a ``.pth`` file that adds the
    server's site-packages after the venv's own.
    """

    def __init__(self, root: Path, python: str) -> None:
        self.root = root
        self.python = python
        self._locks: dict[str, asyncio.Lock] = {}

    async def python_for(
        self, requirements: Path | None, extra: Sequence[str] = (), progress: Progress | None = None
    ) -> str:
        """The interpreter of the venv for ``requirements`` plus ``extra`` requirement lines (a conda
        file's pip packages), built (pip install) unless cached by their content."""
        content = b""
        if requirements is not None:
            try:
                content = requirements.read_bytes()
            except OSError as exc:
                raise DeploymentFailed(f"cannot read {requirements}: {exc.strerror}") from None
        if extra:  # a flow's requirements.txt alone keeps the digest of its bytes
            content += b"\0conda_file pip:\n" + "\n".join(extra).encode()
        digest = hashlib.sha256(content).hexdigest()[:16]
        venv = self.root / digest
        python = str(venv / "bin" / "python")
        async with self._locks.setdefault(digest, asyncio.Lock()):
            if not (venv / READY_MARK).exists():
                if progress is not None:
                    progress(f"building the environment {digest} (pip install)")
                await self._build(venv, requirements, extra, progress)
                (venv / READY_MARK).write_bytes(content)
                if progress is not None:
                    progress(f"environment {digest} ready")
            elif progress is not None:
                progress(f"environment {digest} is cached")
        return python

    async def _build(
        self, venv: Path, requirements: Path | None, extra: Sequence[str], progress: Progress | None
    ) -> None:
        shutil.rmtree(venv, ignore_errors=True)  # a build that was interrupted
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            await self._create(venv)
            python = str(venv / "bin" / "python")
            outputs = []
            for what, args, cwd in _installs(requirements, extra, self.root / f"{venv.name}.conda.txt"):
                code, output = await _run(
                    python,
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    *args,
                    cwd=cwd,
                    progress=progress,
                )
                outputs.append(output)
                (self.root / f"{venv.name}.log").write_text("\n".join(outputs), encoding="utf-8")
                if code != 0:
                    reason = f"installing {what} failed (pip exited with code {code})"
                    hint = _missing(output, what)
                    raise DeploymentFailed(f"{reason}: {hint}" if hint else reason, _tail(output))
            make_private(venv)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise

    async def _create(self, venv: Path) -> None:
        code, output = await _run(self.python, "-c", _INSPECT)
        if code != 0:
            raise DeploymentFailed(f"cannot run {self.python}", _tail(output))
        parent = json.loads(output.strip().splitlines()[-1])
        # With pip among the server's packages the venv borrows it: no ensurepip, seconds saved.
        without_pip = ["--without-pip"] if parent["pip"] else []
        code, output = await _run(
            self.python, "-m", "venv", "--system-site-packages", *without_pip, str(venv)
        )
        if code != 0:
            raise DeploymentFailed("creating the virtualenv for requirements.txt failed", _tail(output))
        code, output = await _run(str(venv / "bin" / "python"), "-c", _PURELIB)
        if code != 0:
            raise DeploymentFailed("the new virtualenv does not run", _tail(output))
        site_packages = Path(output.strip().splitlines()[-1])
        lines = [f"import site; site.addsitedir({path!r})" for path in parent["site"]]
        (site_packages / PARENT_PTH).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _installs(
    requirements: Path | None, extra: Sequence[str], listing: Path
) -> list[tuple[str, list[str], Path | None]]:
    """(what, pip arguments, working folder) of each install: requirements.txt, then the conda pip list."""
    steps: list[tuple[str, list[str], Path | None]] = []
    if requirements is not None:
        folder = requirements.resolve().parent
        steps.append(("requirements.txt", ["-r", str(requirements.resolve())], folder))
    if extra:
        listing.write_text("\n".join(extra) + "\n", encoding="utf-8")
        steps.append(("the conda file's packages", ["-r", str(listing)], None))
    return steps


def _missing(output: str, what: str) -> str | None:
    """pip's "No matching distribution found for X", said plainly (a conda-only package, often)."""
    found = re.search(r"No matching distribution found for (\S+)", output)
    if found is None:
        return None
    hint = "; a conda-only package cannot be installed with pip" if "conda" in what else ""
    return f"no package {found[1]!r} on the package index{hint}"
