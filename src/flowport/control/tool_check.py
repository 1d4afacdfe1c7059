"""Check that a flow's tools import, without running flow code in the control plane.

Flow code is untrusted: the check imports the tools in a short-lived child process
(``python -I -B -m flowport.engine.check``) with a minimal environment (no server
variables, so no admin token or database URL), a time limit for it and all it starts, and,
when flowport runs as root, as the instances' unprivileged user on a copy that user owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from flowport.control.errors import ApiError
from flowport.flow import FlowDef, Problem
from flowport.runtime.base import DeploymentFailed
from flowport.runtime.local.isolation import (
    INSTANCE_PYTHON_ENV,
    InstanceUser,
    Isolation,
    instance_python,
    instance_user,
)

TIMEOUT_SECONDS = 60.0


def check_tools(flow: FlowDef, folder: Path, shown_as: Path) -> dict[str, Any] | None:
    """Raise ApiError 400 naming each tool that fails to import (file and line).

    ``folder`` holds the copy to check; messages name ``shown_as`` (the user's folder) instead.
    For a flex flow, return the inputs its entry's signature gives (``{name: {type, default}}``).
    """
    imports = any(node.source_path or node.source_type == "package" for node in flow.nodes.values())
    if not imports and "flowport.flex" not in flow.raw:
        return None  # no code to import (a flex flow's entry always is; a package tool's module is)
    if Path(flow.file).suffix == ".prompty":
        return None  # a prompty holds no code to import
    user = _instance_user()
    python = instance_python()
    command = [python, "-I", "-B", "-m", "flowport.engine.check", str(folder)]
    if _has_requirements(flow, folder):
        command.append("--requirements")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    if user is not None:  # as root: flow code runs as the instances' user, as it will when deployed
        _hand_over(folder, user)
    try:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=Isolation(user).become(),
        )
    except OSError as exc:
        who = f"user {user.name!r}" if user is not None else "the server"
        raise ApiError(
            500,
            "ToolCheckFailed",
            f"{who} cannot run {python} to check the flow's tools ({exc.strerror}); set "
            f"{INSTANCE_PYTHON_ENV} to an interpreter with flowport that {who} can run",
        ) from None
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # and whatever the tools started
        process.communicate()
        raise ApiError(
            400,
            "ToolCheckTimeout",
            f"importing the flow's tools took longer than {TIMEOUT_SECONDS:.0f} s; "
            "a tool must not do slow work when it is imported",
        ) from None
    done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    try:
        found = json.loads(done.stdout.decode("utf-8"))
    except ValueError:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise ApiError(
            400, "ToolCheckFailed", f"checking the flow's tools failed (exit {done.returncode}): {tail[0]}"
        ) from None
    interface = found if isinstance(found, dict) else None
    if interface is not None:
        found = interface.get("problems") or []
    if found:
        problems = [
            Problem(
                p["code"],
                p["message"].replace(str(folder), str(shown_as)),
                (p["file"] or "").replace(str(folder), str(shown_as)) or None,
                p["line"],
            )
            for p in found
        ]
        listing = "\n".join(str(p) for p in problems)
        raise ApiError(400, "InvalidFlow", f"the model's flow is not valid:\n{listing}", problems=problems)
    return interface.get("inputs") if interface is not None else None


def _instance_user() -> InstanceUser | None:
    try:
        return instance_user()
    except DeploymentFailed as exc:
        raise ApiError(500, "InstanceUserMissing", exc.reason) from None


def _hand_over(folder: Path, user: InstanceUser) -> None:
    """The throwaway copy becomes the instance user's; its parents let that user pass, not list."""
    folder.parent.chmod(0o711)
    for top, dirs, files in os.walk(folder):
        for path in (top, *(os.path.join(top, name) for name in (*dirs, *files))):
            os.chown(path, user.uid, user.gid, follow_symlinks=False)


def _has_requirements(flow: FlowDef, folder: Path) -> bool:
    declared = (flow.environment or {}).get("python_requirements_txt")
    return (folder / str(declared or "requirements.txt")).is_file()
