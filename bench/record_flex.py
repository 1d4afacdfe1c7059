"""Record prompt flow 1.18.5's answers for the flex flows under tests/flows (their cases.json).

Each case lists ``args`` (after ``pf flow test --flow <flow>``) and ``inputs`` (what flowport is
given); this runs pf, reads ``.promptflow/flow.output.json`` (or the failure line) and writes
``expected`` / ``expected_error`` back. Run: ``python bench/record_flex.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _promptflow import bulk_run_expectations, ensure_venv, pf_env, venv_pf

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "tests" / "flows"
PREFIX = "pf.flow.test failed with "


def record_bulk(flow: Path, case: dict, home: Path) -> None:
    """``pf run create`` over the case's data: outputs, metrics and each line's status."""
    name = f"{flow.name}_{case['id']}_{int(time.time())}"
    args = [str(venv_pf()), "run", "create", "--flow", ".", "--data", case["data"], "--name", name]
    args += case.get("args", [])
    subprocess.run(args, cwd=flow, env=pf_env(home), capture_output=True, text=True, timeout=600, check=True)
    run_dir = home / ".promptflow" / ".runs" / name
    case["pf_command"] = " ".join(["pf", *args[1:]]).replace("--flow .", f"--flow tests/flows/{flow.name}")
    case["source"] = "pf run create, promptflow 1.18.5"
    case.update(bulk_run_expectations(run_dir))


def record(flow: Path, case: dict, home: Path) -> None:
    if case.get("kind") == "bulk":
        record_bulk(flow, case, home)
        return
    shutil.rmtree(flow / ".promptflow", ignore_errors=True)
    args = [str(venv_pf()), "flow", "test", "--flow", case.get("flow_arg", "."), *case.get("args", [])]
    done = subprocess.run(args, cwd=flow, env=pf_env(home), capture_output=True, text=True, timeout=300)
    case["pf_command"] = " ".join(["pf", *args[1:]]).replace("--flow .", f"--flow tests/flows/{flow.name}")
    case["source"] = "pf flow test, promptflow 1.18.5"
    for key in ("expected", "expected_error", "expected_printed"):
        case.pop(key, None)
    output = flow / ".promptflow" / "flow.output.json"
    text = done.stdout + done.stderr
    if done.returncode == 0 and output.is_file():
        case["expected"] = json.loads(output.read_text())
        printed = done.stdout.strip()
        if not printed.startswith("{"):
            case["expected_printed"] = printed
    else:
        printed = text[text.rindex(PREFIX) :].strip()
        exception, _, message = printed[len(PREFIX) :].partition(": ")
        case["expected_error"] = {"exception": exception, "message": message, "printed": printed}
    shutil.rmtree(flow / ".promptflow", ignore_errors=True)


CONNECTION = "name: open_ai_connection\ntype: open_ai\napi_key: test-key\nbase_url: http://127.0.0.1:9/v1\n"


def add_connection(home: Path) -> None:
    """The connection the flex_connection flow names, in pf's store (no call reaches base_url)."""
    spec = home / "open_ai_connection.yaml"
    spec.write_text(CONNECTION)
    command = [str(venv_pf()), "connection", "create", "--file", str(spec)]
    subprocess.run(command, env=pf_env(home), capture_output=True, timeout=300, check=True)


def main() -> None:
    ensure_venv()
    with tempfile.TemporaryDirectory() as scratch:
        add_connection(Path(scratch))
        for cases_file in sorted(FLOWS.glob("flex_*/cases.json")) + sorted(
            FLOWS.glob("err_flex_*/cases.json")
        ):
            cases = json.loads(cases_file.read_text())
            for case in cases:
                record(cases_file.parent, case, Path(scratch))
                print(cases_file.parent.name, case["id"], "expected" in case or "expected_outputs" in case)
            cases_file.write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
