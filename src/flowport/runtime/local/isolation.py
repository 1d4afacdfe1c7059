"""What an instance process can see: a minimal environment, a private folder, and (as root) its own user.

Flow code is untrusted. An instance gets only:

- the variables in ``INHERITED`` (and names starting with ``LC_``) from the server's
  environment, plus the names listed in ``FLOWPORT_INSTANCE_PASS_ENV`` (comma-separated, the
  operator's explicit additions); its deployment's ``environment_variables`` arrive with its
  config on stdin and are set by the instance itself;
- ``HOME`` and ``TMPDIR`` in a folder of its own (``<runtime dir>/<n>/``, also holding its
  socket), ``PYTHONUNBUFFERED=1``, and ``VIRTUAL_ENV`` when it runs in a requirements venv.

When the server runs as root, instances run as ``FLOWPORT_INSTANCE_USER`` (default
``nobody``) with no supplementary groups: they cannot read ``FLOWPORT_HOME`` (0700). What
they must read is copied out of it into the runtime folder (``/tmp/fp-*``, owned by root,
group the instance user's group, mode 0710): the flow snapshot and the requirements venv,
read-only (root-owned, 0750/0640). ``FLOWPORT_INSTANCE_USER=root`` keeps instances as root
(not isolated).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from flowport.runtime.base import DeploymentFailed

INSTANCE_USER_ENV = "FLOWPORT_INSTANCE_USER"
PASS_ENV = "FLOWPORT_INSTANCE_PASS_ENV"
DEFAULT_USER = "nobody"

INHERITED = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        # TLS trust and proxies, for the LLM client
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        # the serving tunings an instance reads itself
        "FLOWPORT_INLINE_FAST_TOOLS",
        "FLOWPORT_MAX_QUEUE_WAIT_MS",
        "FLOWPORT_MAX_BODY_BYTES",
        # tracing: off, content, how many, and where spans go (the OTEL_ prefix below; Azure Monitor)
        "FLOWPORT_TRACING",
        "FLOWPORT_TRACE_CONTENT",
        "FLOWPORT_TRACE_RATE",
    }
)
"""The server's variables an instance inherits: everything it needs to run, nothing of the control plane."""
INHERITED_PREFIXES = ("LC_", "OTEL_")
CREDENTIAL_MARKERS = ("HEADERS", "CLIENT_KEY", "CONNECTION_STRING")
"""Tracing variables that carry credentials (``OTEL_EXPORTER_OTLP_HEADERS``, client keys) stay with
the server: flow code is untrusted. A deployment that wants its spans sent with credentials sets
them in its own ``environment_variables`` (or the operator names them in ``FLOWPORT_INSTANCE_PASS_ENV``)."""
INSTANCE_PYTHON_ENV = "FLOWPORT_INSTANCE_PYTHON"


@dataclass(frozen=True)
class InstanceUser:
    name: str
    uid: int
    gid: int


def instance_python(environ: Mapping[str, str] = os.environ) -> str:
    """The interpreter instances run: ``FLOWPORT_INSTANCE_PYTHON`` or the server's own.

    As root it must be one the instance user can run (a Python under ``/root`` is not).
    """
    return environ.get(INSTANCE_PYTHON_ENV) or sys.executable


def instance_user(environ: Mapping[str, str] = os.environ) -> InstanceUser | None:
    """The user instances run as; None when the server is not root or is told to keep root."""
    if os.geteuid() != 0:
        return None
    name = environ.get(INSTANCE_USER_ENV) or DEFAULT_USER
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise DeploymentFailed(
            f"{INSTANCE_USER_ENV}={name!r} names no user on this machine; create an unprivileged user "
            f"for instances or name an existing one (default {DEFAULT_USER})"
        ) from None
    if entry.pw_uid == 0:
        return None
    return InstanceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class Workspace:
    """One instance process's private folder: its socket, ``HOME`` and ``TMPDIR``."""

    root: Path

    @property
    def socket(self) -> str:
        return str(self.root / "s")

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"


class Isolation:
    """Builds what an instance process runs in; one per runtime, its folder removed by ``close``."""

    def __init__(self, user: InstanceUser | None = None, pass_env: Collection[str] = ()) -> None:
        self.user = user
        self.pass_env = frozenset(pass_env)
        self._root: Path | None = None
        self._numbers = 0
        self._shared: dict[Path, Path] = {}
        self._checked: set[str] = set()
        self._copying = asyncio.Lock()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Isolation:
        """``FLOWPORT_INSTANCE_USER`` and ``FLOWPORT_INSTANCE_PASS_ENV``; a bad user fails every rollout."""
        names = [n.strip() for n in (environ.get(PASS_ENV) or "").split(",") if n.strip()]
        try:
            return cls(instance_user(environ), names)
        except DeploymentFailed as exc:
            return _Refused(exc)

    # -- the runtime folder --------------------------------------------------------------

    @property
    def root(self) -> Path:
        """``/tmp/fp-*`` (a Unix socket path must stay under ~100 characters)."""
        if self._root is None:
            _sweep_stale()
            root = Path(tempfile.mkdtemp(prefix=f"fp-{os.getpid()}-", dir="/tmp"))
            if self.user is not None:
                os.chown(root, -1, self.user.gid)
                root.chmod(0o710)  # the instance user may pass through, not list
            self._root = root
        return self._root

    def new_workspace(self) -> Workspace:
        """Built whole while the server alone owns it, handed to the instance user from the inside
        out (never following a link): no instance can slip a link in for the server to chown."""
        self._numbers += 1
        workspace = Workspace(self.root / str(self._numbers))
        for folder in (workspace.root, workspace.home, workspace.tmp):
            folder.mkdir(mode=0o700)
        if self.user is not None:
            for folder in (workspace.home, workspace.tmp, workspace.root):
                os.chown(folder, self.user.uid, self.user.gid, follow_symlinks=False)
        return workspace

    def release(self, workspace: Workspace) -> None:
        shutil.rmtree(workspace.root, ignore_errors=True)

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            self._shared.clear()

    # -- what the instance reads -----------------------------------------------------------

    async def readable(self, path: Path) -> Path:
        """``path`` (a flow snapshot or a venv under ``FLOWPORT_HOME``) where the instance user can read it.

        Without a separate user that is ``path`` itself; otherwise a root-owned, read-only
        copy made once per runtime (snapshots and built venvs never change), in a thread: a
        venv can be large, and the server's event loop also serves requests.
        """
        if self.user is None:
            return path
        async with self._copying:
            shared = self._shared.get(path)
            if shared is None:
                shared = self.root / "shared" / f"{len(self._shared) + 1}-{path.name}"
                await asyncio.to_thread(self._copy, path, shared, self.user.gid)
                self._shared[path] = shared
        return shared

    @staticmethod
    def _copy(path: Path, shared: Path, gid: int) -> None:
        shared.parent.mkdir(exist_ok=True)
        os.chown(shared.parent, -1, gid)
        shared.parent.chmod(0o710)  # explicitly: the server's umask is 0o077
        shutil.copytree(path, shared, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        _hand_to_group(shared, gid)

    async def check_python(self, python: str) -> None:
        """Fails with a clear reason when the instance user cannot run ``python`` (and import flowport)."""
        if self.user is None or python in self._checked:
            return
        try:
            process = await asyncio.create_subprocess_exec(
                python,
                "-c",
                "import flowport.runtime.instance",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.environment(None, python),
                cwd="/",
                preexec_fn=self.become(),
            )
            output, _ = await process.communicate()
            failure = output.decode("utf-8", "replace").splitlines()[-5:] if process.returncode else None
        except OSError as exc:
            failure = [f"{python}: {exc.strerror}"]
        if failure is not None:
            raise DeploymentFailed(
                f"instances run as user {self.user.name!r}, which cannot run {python} with flowport: "
                f"install flowport where that user can read it, or set {INSTANCE_USER_ENV} to a user "
                "that can",
                failure,
            )
        self._checked.add(python)

    # -- how it is started -----------------------------------------------------------------

    def environment(self, workspace: Workspace | None, python: str) -> dict[str, str]:
        """The instance's whole environment (before its deployment's variables are applied)."""
        env = {
            name: value
            for name, value in os.environ.items()
            if name in self.pass_env
            or name in INHERITED
            or (name.startswith(INHERITED_PREFIXES) and not any(m in name for m in CREDENTIAL_MARKERS))
        }
        env.setdefault("PATH", os.defpath)
        env["PYTHONUNBUFFERED"] = "1"
        if workspace is not None:
            env["HOME"] = str(workspace.home)
            env["TMPDIR"] = str(workspace.tmp)
        venv = Path(python).parent.parent
        if (venv / "pyvenv.cfg").is_file():
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        return env

    def become(self) -> Callable[[], None] | None:
        """A ``preexec_fn`` that switches the child to the instance user, no supplementary groups.

        (Not ``subprocess``'s ``user=``: the server's uvloop does not take it.)
        """
        user = self.user
        if user is None:
            return None

        def switch() -> None:
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)

        return switch


class _Refused(Isolation):
    """The configured instance user does not exist: every rollout fails with the reason."""

    def __init__(self, reason: DeploymentFailed) -> None:
        super().__init__()
        self.reason = reason

    async def check_python(self, python: str) -> None:
        raise self.reason


def _sweep_stale() -> None:
    """Remove the runtime folders of servers of this user that died without ``close`` (``kill -9``)."""
    for folder in Path("/tmp").glob("fp-*-*"):
        pid = folder.name.split("-")[1]
        try:
            if not pid.isdigit() or folder.lstat().st_uid != os.geteuid() or not folder.is_dir():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def _hand_to_group(top: Path, gid: int) -> None:
    """Root-owned, readable (never writable) by ``gid``: dirs 0750, files 0640 (0750 if executable)."""
    for folder, dirs, files in os.walk(top):
        os.chown(folder, 0, gid)
        os.chmod(folder, 0o750)
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                os.lchown(path, 0, gid)
            elif not stat.S_ISDIR(info.st_mode):
                os.chown(path, 0, gid)
                os.chmod(path, 0o750 if info.st_mode & 0o100 else 0o640)
