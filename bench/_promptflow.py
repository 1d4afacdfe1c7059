"""Prompt flow 1.18.5 in its own virtualenv, for the benchmarks to compare against.

The venv is created once and reused: ``bench/.venv-promptflow`` by default, or the folder
named by ``FLOWPORT_BENCH_PF_VENV`` (it is populated there if it lacks prompt flow).
Everything runs with a scratch ``HOME`` holding a ``pf.yaml`` that turns off telemetry and
the trace service, so prompt flow's store stays out of ``~`` and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

PF_VERSION = "1.18.5"
PACKAGES = (f"promptflow=={PF_VERSION}", "promptflow-tools", "keyrings.alt", "uvicorn")
"""uvicorn: ``pf flow serve --engine fastapi`` needs it and prompt flow does not install it."""
VENV_ENV = "FLOWPORT_BENCH_PF_VENV"
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_VENV = BENCH_DIR / ".venv-promptflow"
RESULT_PREFIX = "BENCH_RESULT "
"""Worker scripts print one line starting with this, then JSON; all else is log noise."""

_PF_YAML = "telemetry:\n  enabled: false\ntrace:\n  destination: none\n"
_DROPPED_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "FLOWPORT_HOME")


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV).expanduser().resolve()


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def venv_pf() -> Path:
    return venv_dir() / "bin" / "pf"


def installed_version(python: Path) -> str | None:
    """The promptflow version installed for ``python`` (None if it or uvicorn is missing)."""
    if not python.is_file():
        return None
    code = "import uvicorn, importlib.metadata as m; print(m.version('promptflow'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_venv() -> Path:
    """Create and populate the prompt flow venv unless it is ready; return its python."""
    python = venv_python()
    if installed_version(python) == PF_VERSION:
        return python
    folder = venv_dir()
    if not python.is_file():
        base = shutil.which("python3") or sys.executable
        print(f"[bench] creating {folder} with {base}", file=sys.stderr, flush=True)
        subprocess.run([base, "-m", "venv", str(folder)], check=True)
    print(f"[bench] installing {' '.join(PACKAGES)} into {folder}", file=sys.stderr, flush=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PACKAGES], check=True)
    found = installed_version(python)
    if found != PF_VERSION:
        raise RuntimeError(f"{folder} holds promptflow {found}, expected {PF_VERSION}")
    return python


def prepare_home(home: Path) -> Path:
    """A scratch HOME for prompt flow: no telemetry, no trace service, no PyPI version check."""
    config = home / ".promptflow"
    config.mkdir(parents=True, exist_ok=True)
    (config / "pf.yaml").write_text(_PF_YAML)
    stamp = str(datetime.now())
    check = {"current_version": PF_VERSION, "latest_version": PF_VERSION}
    check |= {"last_check_time": stamp, "last_hint_time": stamp}
    (config / "pf_version_check.json").write_text(json.dumps(check))
    return home


def pf_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for prompt flow processes: tracing off, scratch HOME, no flowport venv."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PATH"] = f"{venv_dir() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(prepare_home(home))
    env["PF_DISABLE_TRACING"] = "true"
    env["APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED"] = "true"
    env.update(extra or {})
    return env


def run_script(
    script: Path,
    args: Sequence[str],
    home: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Run ``script`` with the prompt flow venv's python; return the JSON of its result line."""
    command = [str(ensure_venv()), str(script), *args]
    done = subprocess.run(
        command,
        env=pf_env(home, extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
    raise RuntimeError(f"{script.name} {' '.join(args)} gave no result (exit {done.returncode}):\n{tail}")


def emit_result(result: Mapping[str, Any]) -> None:
    """Print the result line a worker script hands back to ``run_script``."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def bulk_run_expectations(run_dir: Path) -> dict[str, Any]:
    """What a parity case expects of a ``pf run create`` run: outputs, metrics, each line's status."""
    outputs = run_dir / "flow_outputs" / "output.jsonl"
    metrics = run_dir / "metrics.json"  # none without aggregation nodes
    lines = [
        json.loads(p.read_text().splitlines()[0])
        for p in sorted((run_dir / "flow_artifacts").glob("*.jsonl"))
    ]
    return {
        "expected_outputs": [json.loads(x) for x in outputs.read_text().splitlines() if x.strip()],
        "expected_metrics": json.loads(metrics.read_text()) if metrics.is_file() else {},
        "expected_line_status": [
            {
                "line_number": x["line_number"],
                "status": x["run_info"]["status"],
                "error_code": (x["run_info"]["error"] or {}).get("code"),
                "error_message": (x["run_info"]["error"] or {}).get("message"),
            }
            for x in lines
        ],
        "expected_run_error": None,
    }
