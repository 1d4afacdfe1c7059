"""Record ``expected`` outputs of tests/flows cases by running prompt flow 1.18.5 itself.

``python bench/record_cases.py tests/flows/NAME [...]`` starts the test LLM server, creates
the connections the parity tests use (``open_ai_connection``, ``azure_open_ai_connection``,
``custom_connection``) in a scratch prompt flow home, runs ``pf flow test`` for every case
of each folder's ``cases.json`` and writes back ``expected`` (pf's ``flow.output.json``),
``llm_requests`` (what pf sent to the server), ``pf_command`` and ``source``. A case that
fails under pf gets ``expected_error`` (pf's error code and message) instead.

With ``--direct FOLDER``, the flow's package tool nodes are also run by calling prompt flow's
own tool functions in its venv (``_pf_package_calls.py``) and their outputs, with the
requests they sent, go in the case's ``flowport`` block: for tools flowport runs built in
where ``pf flow test`` does not find them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _promptflow  # bench/ is on sys.path: this script runs from it
import httpx

from flowport.testing.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "pf flow test, promptflow 1.18.5"


def connection_specs(server: LLMServer) -> list[dict[str, Any]]:
    """The connections of tests/conftest.py, in prompt flow's YAML shape."""
    return [
        {"name": "open_ai_connection", "type": "open_ai", "api_key": "test-key", "base_url": server.base_url},
        {
            "name": "azure_open_ai_connection",
            "type": "azure_open_ai",
            "api_key": "test-key",
            "api_base": server.url,
            "api_type": "azure",
            "api_version": "2024-02-01",
        },
        {
            "name": "custom_connection",
            "type": "custom",
            "configs": {
                "endpoint": "https://example.invalid/api",
                "api_version": "2024-02-01",
                "retries": "3",
            },
            "secrets": {"api_key": "custom-secret"},
        },
    ]


def pf(args: list[str], home: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_promptflow.venv_pf()), *args],
        env=_promptflow.pf_env(home),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def record_case(
    flow: Path,
    case: dict[str, Any],
    home: Path,
    server: LLMServer,
    on_output: Callable[[Path, dict[str, Any], str], None] | None = None,
) -> None:
    """``on_output(flow, case, printed)`` runs while pf's ``.promptflow`` folder is still there."""
    rel = flow.relative_to(ROOT)
    args = ["flow", "test", "--flow", str(rel)]
    shown = list(args)
    if case.get("inputs"):
        inputs = Path(tempfile.mkstemp(suffix=".json")[1])
        inputs.write_text(json.dumps(case["inputs"]))
        args += ["--inputs", str(inputs)]
        shown += ["--inputs", "<json file with inputs>"]
    if case.get("node"):
        args += ["--node", case["node"]]
        shown += ["--node", case["node"]]
    httpx.delete(f"{server.url}/_requests")
    shutil.rmtree(flow / ".promptflow", ignore_errors=True)
    done = pf(args, home)
    for key in ("expected", "expected_error", "llm_requests"):
        case.pop(key, None)
    case["pf_command"] = "pf " + " ".join(shown)
    case["source"] = SOURCE
    output = flow / ".promptflow" / "flow.output.json"
    if done.returncode == 0 and output.is_file():
        case["expected"] = json.loads(output.read_text())
    else:
        detail = flow / ".promptflow" / "flow.detail.json"
        error = json.loads(detail.read_text())["flow_runs"][0]["error"] if detail.is_file() else {}
        printed = [line for line in done.stdout.splitlines() if "failed with" in line]
        line = printed[-1] if printed else "\n".join(done.stdout.strip().splitlines()[-1:])
        # An error raised before running (no detail file) names its code in the printed line:
        # "... failed with ResolveToolError: Tool load failed in 'x': (NodeInputValidationError) ..."
        named = re.search(r"failed with (\w+): .*?\((\w+)\)", line)
        bare = re.search(r"failed with (\w+): ", line)  # no inner code: "failed with PackageToolNotFound..."
        case["expected_error"] = {
            "code": error.get("code") or (named.group(1) if named else bare.group(1) if bare else None),
            "message": error.get("message"),
            "inner_code": (error.get("innerError") or {}).get("code") or (named.group(2) if named else None),
            "printed": line,
        }
    sent = httpx.get(f"{server.url}/_requests").json()
    if sent:
        case["llm_requests"] = [{"path": r["path"], "body": r["body"]} for r in sent]
    if on_output is not None:
        on_output(flow, case, done.stdout)
    shutil.rmtree(flow / ".promptflow", ignore_errors=True)


DIRECT_WHY = (
    "pf flow test does not find these tools as package tools (PackageToolNotFoundError: only "
    "promptflow.tools.embedding.embedding is registered); flowport runs them built in. Expected: "
    "what prompt flow's own tool functions (promptflow-tools, called directly in pf's venv, "
    "bench/_pf_package_calls.py) returned and sent"
)


def record_direct(flow: Path, case: dict[str, Any], home: Path, server: LLMServer) -> None:
    httpx.delete(f"{server.url}/_requests")
    script = Path(__file__).resolve().parent / "_pf_package_calls.py"
    outputs = _promptflow.run_script(script, [str(flow), json.dumps(case.get("inputs") or {})], home)
    sent = httpx.get(f"{server.url}/_requests").json()
    requests = [{"path": r["path"], "body": r["body"]} for r in sent]
    case["flowport"] = {"why": DIRECT_WHY, "expected": outputs, "llm_requests": requests}


def create_connections(home: Path, server: LLMServer) -> None:
    """The parity connections, pointing at ``server``, in prompt flow's store under ``home``."""
    for spec in connection_specs(server):
        file = home / f"{spec['name']}.yaml"
        file.write_text(json.dumps(spec))
        done = pf(["connection", "create", "--file", str(file)], home)
        if done.returncode != 0:
            raise SystemExit(f"pf connection create failed: {done.stdout}{done.stderr}")


def main(folders: list[str]) -> None:
    direct = "--direct" in folders
    folders = [f for f in folders if f != "--direct"]
    _promptflow.ensure_venv()
    with tempfile.TemporaryDirectory() as scratch, LLMServer() as server:
        home = Path(scratch)
        create_connections(home, server)
        for folder in folders:
            flow = Path(folder).resolve()
            cases_file = flow / "cases.json"
            cases = json.loads(cases_file.read_text())
            for case in cases:
                record_case(flow, case, home, server)
                if direct:
                    record_direct(flow, case, home, server)
                print(f"{flow.name}/{case['id']}: {'expected' if 'expected' in case else 'error'}")
            cases_file.write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
