"""Check that a flow's tools import, without running flow code in the control plane.

Flow code is untrusted: the check imports the tools in a short-lived child process
(``python -I -B -m flowport.engine.check``) with a minimal environment (no server
variables, so no admin token or database URL) and a time limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flowport.control.errors import ApiError
from flowport.flow import FlowDef, Problem

TIMEOUT_SECONDS = 60.0


def check_tools(flow: FlowDef, folder: Path, shown_as: Path) -> None:
    """Raise ApiError 400 naming each tool that fails to import (file and line).

    ``folder`` holds the copy to check; messages name ``shown_as`` (the user's folder) instead.
    """
    if not any(node.source_path for node in flow.nodes.values()):
        return
    command = [sys.executable, "-I", "-B", "-m", "flowport.engine.check", str(folder)]
    if _has_requirements(flow, folder):
        command.append("--requirements")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    try:
        done = subprocess.run(
            command, cwd=folder, env=env, capture_output=True, timeout=TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise ApiError(
            400,
            "ToolCheckTimeout",
            f"importing the flow's tools took longer than {TIMEOUT_SECONDS:.0f} s; "
            "a tool must not do slow work when it is imported",
        ) from None
    try:
        found = json.loads(done.stdout.decode("utf-8"))
    except ValueError:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise ApiError(
            400, "ToolCheckFailed", f"checking the flow's tools failed (exit {done.returncode}): {tail[0]}"
        ) from None
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


def _has_requirements(flow: FlowDef, folder: Path) -> bool:
    declared = (flow.environment or {}).get("python_requirements_txt")
    return (folder / str(declared or "requirements.txt")).is_file()
