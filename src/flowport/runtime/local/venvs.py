"""Virtualenvs for flows with a ``requirements.txt``, built once per distinct file content.

A build runs package code (an sdist's ``setup.py``, a build backend, a local folder), which is
as untrusted as flow code: when instances run as another user (the server is root), the whole
build runs as that user in a private folder of the runtime's (``/tmp/fp-*/b-<hash>``), and only
its result is taken over by the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowport.runtime.base import DeploymentFailed
from flowport.runtime.local.isolation import INHERITED, INHERITED_PREFIXES, Isolation
from flowport.settings import make_private

READY_MARK = ".flowport-ready"
PARENT_PTH = "_flowport_parent.pth"
TAIL_LINES = 30

_INSPECT = (
    "import importlib.util, json, site, sys; print(json.dumps({"
    "'site': site.getsitepackages(), 'pip': importlib.util.find_spec('pip') is not None}))"
)
_PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"
_WRITE = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(sys.argv[2], encoding='utf-8')"
_PACK = (
    "import sys, tarfile\n"
    "with tarfile.open(fileobj=sys.stdout.buffer, mode='w|') as archive: archive.add(sys.argv[1], '.')"
)


Progress = Callable[[str], None]
"""Told each line of output of an install as it comes (the deployment's provisioning log)."""


@dataclass
class _Builder:
    """Who runs a build's commands: the server itself, or (as root) the instance user in ``folder``."""

    isolation: Isolation | None = None
    folder: Path | None = None
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def separate(self) -> bool:
        return self.folder is not None

    @property
    def owner(self) -> tuple[int, int]:
        user = self.isolation.user if self.isolation is not None else None
        return (user.uid, user.gid) if user is not None else (os.getuid(), os.getgid())

    async def run(
        self, *args: str, cwd: Path | None = None, progress: Progress | None = None
    ) -> tuple[int, str]:
        """Run a command; its exit code and its output (stdout and stderr together).

        As the instance user it runs in a session of its own, killed whole when it ends: nothing
        it started outlives the build to change the result while the server takes it over.
        """
        env = dict(self.environment) if self.separate else _build_environment()
        process = await asyncio.create_subprocess_exec(
            *args,
            cwd=cwd or self.folder,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**env, "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1"},
            start_new_session=self.separate,
            preexec_fn=self.isolation.become() if self.isolation is not None and self.separate else None,
        )
        try:
            assert process.stdout is not None
            lines: list[str] = []
            async for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                if progress is not None:
                    progress(line)
            await process.wait()
        finally:
            if self.separate:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
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

    def __init__(self, root: Path, python: str, isolation: Isolation | None = None) -> None:
        self.root = root
        self.python = python
        self.isolation = isolation
        self._locks: dict[str, asyncio.Lock] = {}

    async def python_for(
        self, requirements: Path | None, extra: Sequence[str] = (), progress: Progress | None = None
    ) -> str:
        """The interpreter of the venv for ``requirements`` plus ``extra`` requirement lines (a conda
        file's pip packages), built (pip install) unless cached by their content."""
        # off the event loop: local packages named by the lines are read whole
        content, digest = await asyncio.to_thread(environment_digest, requirements, extra)
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
        builder = self._builder(venv.name)
        try:
            target = builder.folder / "venv" if builder.folder is not None else venv
            if builder.folder is not None:
                requirements, extra = await asyncio.to_thread(_copy_sources, builder, requirements, extra)
            listing = (builder.folder or self.root) / f"{venv.name}.conda.txt"
            steps = _installs(requirements, extra, listing)
            if builder.folder is not None:  # all written: now (and only now) the build user's
                _hand_over(builder.folder, *builder.owner)
            await self._create(builder, target)
            python = str(target / "bin" / "python")
            outputs = []
            for what, args, cwd in steps:
                code, output = await builder.run(
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
            if builder.folder is not None:
                await asyncio.to_thread(_take_over, builder, self.python, target, venv)
            make_private(venv)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        finally:
            if builder.folder is not None:
                shutil.rmtree(builder.folder, ignore_errors=True)

    def _builder(self, digest: str) -> _Builder:
        """The server itself; or, when instances run as another user, that user in a private folder
        (``<runtime folder>/b-<hash>``, 0700, its ``HOME`` and ``TMPDIR`` there) with the instances'
        environment plus pip's settings."""
        isolation = self.isolation
        if isolation is None or isolation.user is None:
            return _Builder()
        folder = isolation.root / f"b-{digest}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700)
        for name in ("home", "tmp", "src"):
            (folder / name).mkdir(mode=0o700)
        environment = isolation.environment(None, self.python)
        environment.pop("VIRTUAL_ENV", None)
        environment.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
        environment.update(_pip_configuration(folder / "home"))
        environment.update(HOME=str(folder / "home"), TMPDIR=str(folder / "tmp"))
        return _Builder(isolation, folder, environment)

    async def _create(self, builder: _Builder, venv: Path) -> None:
        code, output = await builder.run(self.python, "-c", _INSPECT)
        if code != 0:
            raise DeploymentFailed(f"cannot run {self.python}", _tail(output))
        parent = json.loads(output.strip().splitlines()[-1])
        # With pip among the server's packages the venv borrows it: no ensurepip, seconds saved.
        without_pip = ["--without-pip"] if parent["pip"] else []
        code, output = await builder.run(
            self.python, "-m", "venv", "--system-site-packages", *without_pip, str(venv)
        )
        if code != 0:
            raise DeploymentFailed("creating the virtualenv for requirements.txt failed", _tail(output))
        code, output = await builder.run(str(venv / "bin" / "python"), "-c", _PURELIB)
        if code != 0:
            raise DeploymentFailed("the new virtualenv does not run", _tail(output))
        site_packages = Path(output.strip().splitlines()[-1])
        lines = [f"import site; site.addsitedir({path!r})" for path in parent["site"]]
        text = "\n".join(lines) + "\n"
        if not builder.separate:
            (site_packages / PARENT_PTH).write_text(text, encoding="utf-8")
            return
        # in the build user's folder, written by that user: the server follows no path of theirs
        code, output = await builder.run(
            self.python, "-I", "-c", _WRITE, str(site_packages / PARENT_PTH), text
        )
        if code != 0:
            raise DeploymentFailed("the new virtualenv cannot be written", _tail(output))


def environment_digest(requirements: Path | None, extra: Sequence[str] = ()) -> tuple[bytes, str]:
    """What a venv is built from (the requirement lines), and the digest that names it: of those
    bytes and of every local file or folder they name (a wheel, a package folder, a ``-r`` file),
    so a changed local package gets a new venv instead of the stale cached one."""
    content = b""
    if requirements is not None:
        try:
            content = requirements.read_bytes()
        except OSError as exc:
            raise DeploymentFailed(f"cannot read {requirements}: {exc.strerror}") from None
    if extra:  # a flow's requirements.txt alone keeps the digest of its bytes
        content += b"\0conda_file pip:\n" + "\n".join(extra).encode()
    digest = hashlib.sha256(content)
    locals_: dict[Path, None] = {}
    if requirements is not None:
        _local_paths(
            content.split(b"\0", 1)[0].decode("utf-8", "replace"), requirements.resolve().parent, locals_
        )
    _local_paths("\n".join(extra), None, locals_)
    for path in locals_:
        digest.update(b"\0" + str(path).encode())
        _hash_path(path, digest)
    return content, digest.hexdigest()[:16]


_LOCAL_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")
_UNHASHED = frozenset({"__pycache__", ".git", ".venv", "node_modules", ".promptflow"})
"""Folders of a local package that pip does not install from: caches, VCS, environments, run output."""
_LISTING_FLAGS = ("-r", "--requirement", "-c", "--constraint")


def _local_paths(text: str, base: Path | None, found: dict[Path, None]) -> None:
    """The local paths requirement lines name, as pip would read them (relative to ``base``;
    without one, only absolute paths count), into ``found``; ``-r``/``-c`` files are read too."""
    for line in text.splitlines():
        tokens = line.split("#", 1)[0].split()
        for index, token in enumerate(tokens):
            flag, eq, value = token.partition("=")
            if not eq:
                flag, value = (tokens[index - 1] if index else ""), token
            value = value.removeprefix("file://")
            named = flag in _PATH_FLAGS or value.startswith((".", "/", "~")) or "/" in value
            if "://" in value or not (named or value.endswith(_LOCAL_SUFFIXES)):
                continue
            try:
                path = Path(value).expanduser()
                if not path.is_absolute():
                    if base is None:
                        continue
                    path = base / path
                path = path.resolve()
                if path in found or not path.exists():
                    continue
            except (OSError, RuntimeError, ValueError):  # not a path here: pip says what it is
                continue
            found[path] = None
            if flag in _LISTING_FLAGS and path.is_file():
                try:
                    _local_paths(path.read_text(encoding="utf-8", errors="replace"), path.parent, found)
                except OSError:
                    continue


def _hash_path(path: Path, digest: Any) -> None:
    """A file's bytes, or a folder's files (names and bytes, in order; caches and VCS left out)."""
    files = (
        [path]
        if path.is_file()
        else sorted(
            p for p in path.rglob("*") if p.is_file() and not _UNHASHED & set(p.relative_to(path).parts)
        )
    )
    for file in files:
        digest.update(b"\0" + str(file.relative_to(path) if file != path else file.name).encode() + b"\0")
        try:
            with file.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            continue


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


_EDITABLE = re.compile(r"^\s*(?:-e|--editable)(?:\s+|=)(?=[./~]|file:)", re.M)
"""An editable install of a local folder: installed as a copy instead (the build's folder goes)."""
_PATH_FLAGS = ("-e", "--editable", "-r", "--requirement", "-c", "--constraint", "-f", "--find-links")


def _copy_sources(
    builder: _Builder, requirements: Path | None, extra: Sequence[str]
) -> tuple[Path | None, list[str]]:
    """What pip reads, copied where the build user reads it (the originals sit in ``FLOWPORT_HOME``):
    the folder of ``requirements.txt`` whole (its relative paths keep working), and each local
    path of the extra lines, which are rewritten to name the copies."""
    assert builder.folder is not None
    sources = builder.folder / "src"
    copied: dict[str, str] = {}

    def copy(path: Path, whole_folder: bool) -> str:
        """The copy of ``path`` (with its folder for a requirements or constraints file)."""
        key = f"{path}:{whole_folder}"
        if key not in copied:
            target = sources / str(len(copied) + 1)
            top = path.parent if whole_folder else path
            if top.is_dir():
                shutil.copytree(top, target / top.name, symlinks=True)
            else:
                target.mkdir()
                shutil.copy2(top, target / top.name)
            copied[key] = str(target / top.name / path.name) if whole_folder else str(target / top.name)
        return copied[key]

    new_requirements = None
    if requirements is not None:
        new_requirements = Path(copy(requirements.resolve(), whole_folder=True))
        text = new_requirements.read_text(encoding="utf-8")
        new_requirements.write_text(_EDITABLE.sub("", text), encoding="utf-8")
    lines = []
    for line in extra:
        tokens = _EDITABLE.sub("", line).split()
        for index, token in enumerate(tokens):
            flag, eq, value = token.partition("=")
            if not (eq and flag in _PATH_FLAGS):
                flag, value = "", token
            scheme = "file://" if value.startswith("file://") else ""
            local = Path(value.removeprefix(scheme))
            if local.is_absolute() and local.exists():
                previous = tokens[index - 1] if index else ""
                listing = previous in ("-r", "--requirement", "-c", "--constraint") or flag in (
                    "-r",
                    "--requirement",
                    "-c",
                    "--constraint",
                )
                value = scheme + copy(local, whole_folder=listing and local.is_file())
                tokens[index] = f"{flag}={value}" if flag else value
        lines.append(" ".join(tokens))
    return new_requirements, lines


def _pip_configuration(home: Path) -> dict[str, str]:
    """The server user's own pip configuration files, copied into the build user's ``HOME`` (the
    originals under the server's ``HOME`` are out of that user's reach); ``PIP_CONFIG_FILE`` to its
    copy. The site-wide ``/etc/pip.conf`` and ``/etc/xdg/pip/pip.conf`` apply as they are."""
    server_home = Path(os.environ.get("HOME") or Path.home())
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or server_home / ".config")
    for source, relative in (
        (config_home / "pip" / "pip.conf", ".config/pip/pip.conf"),
        (server_home / ".pip" / "pip.conf", ".pip/pip.conf"),
    ):
        if source.is_file():
            (home / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, home / relative)
    named = os.environ.get("PIP_CONFIG_FILE")
    if named and named != os.devnull and Path(named).is_file():
        shutil.copyfile(named, home / "pip-config-file.conf")
        return {"PIP_CONFIG_FILE": str(home / "pip-config-file.conf")}
    return {}


def _hand_over(top: Path, uid: int, gid: int) -> None:
    """The prepared build folder to ``uid:gid``, from the bottom up, never following a link: the
    top goes last, so that user cannot reach into it while the server still walks it."""
    for folder, dirs, files in os.walk(top, topdown=False):
        for name in (*files, *dirs):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
        os.chown(folder, uid, gid, follow_symlinks=False)


def _take_over(builder: _Builder, python: str, built: Path, venv: Path) -> None:
    """The build user's venv, packed by that user and unpacked by the server into the cache,
    root-owned: the server reads no path of the build user's (which a process the build left
    behind could swap for a link), and the archive cannot write outside ``venv``."""
    assert builder.folder is not None and builder.isolation is not None
    process = subprocess.Popen(
        [python, "-I", "-c", _PACK, str(built)],
        cwd=builder.folder,
        env=dict(builder.environment),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=builder.isolation.become(),
    )
    assert process.stdout is not None
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            archive.extractall(venv, filter=_as_root)
        _, errors = process.communicate()
    except (tarfile.TarError, OSError) as exc:
        process.kill()
        _, errors = process.communicate()
        raise DeploymentFailed(
            f"taking over the built virtualenv failed: {exc}",
            errors.decode("utf-8", "replace").splitlines()[-5:],
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    if process.returncode != 0:
        raise DeploymentFailed(
            "taking over the built virtualenv failed", errors.decode("utf-8", "replace").splitlines()[-5:]
        )


def _as_root(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """tarfile's ``tar`` filter (nothing outside the destination, no set-id bits), owned by root;
    only files, folders and symbolic links (a hard link could name a file of the server's)."""
    if not (member.isreg() or member.isdir() or member.issym()):
        raise tarfile.SpecialFileError(member)
    checked = tarfile.tar_filter(member, destination)
    return checked.replace(uid=0, gid=0, uname="root", gname="root", deep=False)
