"""Record prompt flow 1.18.5's answers for the prompty flows under tests/flows (``prompty_*``).

Each case names its ``.prompty`` file (``flow_arg``), the ``args`` after ``pf flow test --flow
<file>`` and ``env`` (``{base_url}``: the test LLM server's ``/v1`` address, ``{url}``: its root).
This starts the test LLM server, creates the parity connections in a scratch home, runs pf from
the flow's folder and writes back ``expected`` (``expected_printed`` when pf printed no JSON, e.g.
a stream), or ``expected_error``, and ``llm_requests``; a ``"kind": "bulk"`` case runs
``pf run create``. Run: ``python bench/record_prompty.py`` (``PROMPTY_ONLY=name`` for some).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import _promptflow
import httpx
from record_cases import create_connections

from flowport.testing.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "tests" / "flows"
PREFIX = "pf.flow.test failed with "


def record_bulk(flow: Path, case: dict, home: Path, env: dict[str, str]) -> None:
    """``pf run create`` over the case's data: outputs, metrics and each line's status."""
    name = f"{flow.name}_{case['id']}_{int(time.time())}"
    args = ["run", "create", "--flow", case["flow_arg"], "--data", case["data"], "--name", name]
    command = [str(_promptflow.venv_pf()), *args]
    subprocess.run(command, cwd=flow, env=env, capture_output=True, text=True, timeout=600, check=True)
    run_dir = home / ".promptflow" / ".runs" / name
    case["pf_command"] = "pf " + " ".join(args).replace(
        f"--flow {case['flow_arg']}", f"--flow tests/flows/{flow.name}/{case['flow_arg']}"
    )
    case["source"] = "pf run create, promptflow 1.18.5"
    case.update(_promptflow.bulk_run_expectations(run_dir))


def record(flow: Path, case: dict, home: Path, server: LLMServer) -> None:
    env = {**_promptflow.pf_env(home)}
    env.update(
        {
            k: v.replace("{base_url}", server.base_url).replace("{url}", server.url)
            for k, v in (case.get("env") or {}).items()
        }
    )
    if case.get("kind") == "bulk":
        record_bulk(flow, case, home, env)
        return
    httpx.delete(f"{server.url}/_requests")
    shutil.rmtree(flow / ".promptflow", ignore_errors=True)
    args = ["flow", "test", "--flow", case["flow_arg"], *case.get("args", [])]
    done = subprocess.run(
        [str(_promptflow.venv_pf()), *args], env=env, cwd=flow, capture_output=True, text=True, timeout=600
    )
    case["pf_command"] = "pf " + " ".join(args).replace(
        f"--flow {case['flow_arg']}", f"--flow tests/flows/{flow.name}/{case['flow_arg']}"
    )
    case["source"] = "pf flow test, promptflow 1.18.5"
    for key in ("expected", "expected_error", "expected_printed", "llm_requests"):
        case.pop(key, None)
    outputs = sorted(flow.glob(".promptflow/**/flow.output.json"))
    text = done.stdout + done.stderr
    if done.returncode == 0 and outputs:
        case["expected"] = json.loads(outputs[0].read_text())
        printed = done.stdout.strip()
        if not printed.startswith(("{", "[")):
            case["expected_printed"] = printed
    elif PREFIX in text:
        printed = text[text.rindex(PREFIX) :].strip().splitlines()[0]
        exception, _, message = printed[len(PREFIX) :].partition(": ")
        case["expected_error"] = {"exception": exception, "message": message, "printed": printed}
    else:
        raise SystemExit(f"{flow.name}/{case['id']}: pf gave no output ({done.returncode}):\n{text[-3000:]}")
    sent = httpx.get(f"{server.url}/_requests").json()
    if sent:
        case["llm_requests"] = [{"path": r["path"], "body": r["body"]} for r in sent]
    shutil.rmtree(flow / ".promptflow", ignore_errors=True)


def main() -> None:
    _promptflow.ensure_venv()
    with tempfile.TemporaryDirectory() as scratch, LLMServer() as server:
        home = Path(scratch)
        create_connections(home, server)
        only = os.environ.get("PROMPTY_ONLY")
        for cases_file in sorted(FLOWS.glob("prompty_*/cases.json")):
            if only and only not in cases_file.parent.name:
                continue
            cases = json.loads(cases_file.read_text())
            for case in cases:
                record(cases_file.parent, case, home, server)
                print(cases_file.parent.name, case["id"], "expected" in case)
            cases_file.write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
