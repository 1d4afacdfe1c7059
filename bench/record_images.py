"""Record prompt flow 1.18.5 on the image flows (tests/flows/image_*), against the test LLM server.

* ``pf flow test`` for each case of a folder's ``cases.json`` (``record_cases.record_case``), and
  ``pf run create`` for its ``"kind": "bulk"`` cases;
* ``pf flow serve --engine fastapi`` of ``image_serve``, written to tests/serve_recordings/fastapi.

pf writes each output image to a file and answers ``{"data:image/png;path": "<file>"}``. The
recording keeps that answer (an absolute path with the flow folder shown as ``{flow}``) and the
files' bytes in ``expected_images`` (path -> base64). ``pf flow test`` prints other files
(``expected_printed``: absolute, ``.promptflow/output``) than it writes to ``flow.output.json``
(``expected``: relative, ``.promptflow/intermediate``).
Run: ``FLOWPORT_BENCH_PF_VENV=/work/pfvenv python bench/record_images.py``.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _promptflow
import httpx
from record_cases import create_connections, pf, record_case
from record_flex_serve import record_exchange, wait_until_serving

from flowport.testing.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ("image_flow", "image_serve", "image_flex")
SERVE_FLOW = "image_serve"
PORT = 18611
JSON = {"Content-Type": "application/json"}
SSE = {**JSON, "Accept": "text/event-stream"}
RED = base64.b64encode((ROOT / "tests" / "flows" / SERVE_FLOW / "red.png").read_bytes()).decode()
SERVE_REQUESTS: list[tuple[str, str, str, dict[str, str], object]] = [
    ("score_data_uri", "POST", "/score", JSON, {"image": f"data:image/png;base64,{RED}"}),
    (
        "score_path_and_list",
        "POST",
        "/score",
        JSON,
        {"question": "Both?", "image": "red.png", "extra": [{"data:image/png;path": "blue.png"}, "x"]},
    ),
    ("score_base64_dict", "POST", "/score", JSON, {"image": {"data:image/gif;base64": RED}}),
    ("score_missing_file", "POST", "/score", JSON, {"image": "nothere.png"}),
    ("score_bad_dict", "POST", "/score", JSON, {"image": {"kind": "png"}}),
    ("get_swagger", "GET", "/swagger.json", {}, None),
    (
        "sse",
        "POST",
        "/score",
        {**JSON, "Accept": "text/event-stream"},
        {"image": "red.png", "question": "Hi"},
    ),
]
_PATH_KEY = re.compile(r"^data:image/.*;path$")


def pin_images(value: Any, roots: dict[Path, str], files: dict[str, str], base: Path) -> Any:
    """``value`` with each image file reference shown under its root's name (``{flow}``), the
    file's bytes added to ``files``."""
    if isinstance(value, list):
        return [pin_images(v, roots, files, base) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and _PATH_KEY.match(next(iter(value))):
        key, path = next(iter(value.items()))
        file = (base / path).resolve()
        shown = path  # a relative path is kept as pf wrote it
        for root, name in roots.items():
            if Path(path).is_absolute() and file.is_relative_to(root.resolve()):
                shown = f"{name}/{file.relative_to(root.resolve()).as_posix()}"
        files[shown] = base64.b64encode(file.read_bytes()).decode()
        return {key: shown}
    return {k: pin_images(v, roots, files, base) for k, v in value.items()}


def keep_images(flow: Path, case: dict[str, Any], printed: str) -> None:
    """pf writes one set of image files for ``flow.output.json`` (``expected``: paths relative to the
    flow, under ``.promptflow/intermediate``) and another for what it prints (``expected_printed``:
    absolute paths under ``.promptflow/output``); both are kept, with the files' bytes."""
    if "expected" in case:
        files: dict[str, str] = {}
        case["expected"] = pin_images(case["expected"], {flow: "{flow}"}, files, flow)
        shown = json.loads(printed[printed.rfind("\n{") + 1 :])  # the outputs, after any log lines
        case["expected_printed"] = pin_images(shown, {flow: "{flow}"}, files, flow)
        case["expected_images"] = files


def record_bulk(flow: Path, case: dict[str, Any], home: Path) -> None:
    name = f"{flow.name}_{case['id']}_{int(time.time())}"
    args = ["run", "create", "--flow", ".", "--data", case["data"], "--name", name]
    mapping = case.get("column_mapping") or {}
    if mapping:
        args += ["--column-mapping", *(f"{k}={v}" for k, v in mapping.items())]
    done = pf(args, home, cwd=flow)  # exits 1 after the run when a line failed (it cannot show it)
    run_dir = home / ".promptflow" / ".runs" / name
    if not (run_dir / "flow_outputs").is_dir():
        raise SystemExit(f"pf run create failed: {done.stdout}{done.stderr}")
    case["pf_command"] = "pf " + " ".join(args).replace("--flow .", f"--flow tests/flows/{flow.name}")
    case["source"] = "pf run create, promptflow 1.18.5"
    case.update(_promptflow.bulk_run_expectations(run_dir))
    files: dict[str, str] = {}
    base = run_dir / "flow_outputs"
    case["expected_outputs"] = pin_images(case["expected_outputs"], {run_dir: "{run}"}, files, base)
    case["expected_images"] = files
    for line in case["expected_line_status"]:  # an image file named in the data: in the data's folder
        if line["error_message"]:
            line["error_message"] = line["error_message"].replace(str(flow), "{data}")


def record_serve(home: Path, scratch: Path) -> None:
    copy = scratch / SERVE_FLOW
    shutil.copytree(ROOT / "tests" / "flows" / SERVE_FLOW, copy, ignore=shutil.ignore_patterns("cases.json"))
    command = [str(_promptflow.venv_pf()), "flow", "serve", "--source", str(copy), "--port", str(PORT)]
    command += ["--host", "127.0.0.1", "--engine", "fastapi", "--skip-open-browser"]
    log = scratch / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=_promptflow.pf_env(home), cwd=copy, stdout=out, stderr=out)
    try:
        wait_until_serving(process, PORT, SERVE_FLOW, log)
        for name, *request in SERVE_REQUESTS:
            out_file = ROOT / "tests" / "serve_recordings" / "fastapi" / f"{SERVE_FLOW}__{name}.json"
            response = record_exchange(PORT, request, f"flows/{SERVE_FLOW}", out_file, Path(__file__).name)
            print(SERVE_FLOW, name, response["status"], str(response["body"])[:150])
    finally:
        process.terminate()
        process.wait(30)


def main(args: list[str]) -> None:
    """``args``: any of ``test``, ``bulk``, ``serve`` (all when none is named), and flow folder
    names (all of ``FLOWS`` when none is named)."""
    parts = [a for a in args if a not in FLOWS] or ["test", "bulk", "serve"]
    folders = [a for a in args if a in FLOWS] or list(FLOWS)
    _promptflow.ensure_venv()
    with tempfile.TemporaryDirectory() as scratch, LLMServer() as server:
        home = Path(scratch) / "home"
        home.mkdir()
        create_connections(home, server)
        for folder in folders:
            flow = ROOT / "tests" / "flows" / folder
            cases = json.loads((flow / "cases.json").read_text())
            for case in cases:
                kind = "bulk" if case.get("kind") == "bulk" else "test"
                if kind not in parts:
                    continue
                if kind == "bulk":
                    record_bulk(flow, case, home)
                else:
                    record_case(flow, case, home, server, on_output=keep_images)
                print(folder, case["id"], "error" if "expected_error" in case else "ok")
            (flow / "cases.json").write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n")
            shutil.rmtree(flow / ".promptflow", ignore_errors=True)
        httpx.delete(f"{server.url}/_requests")
        if "serve" in parts:
            record_serve(home, Path(scratch))


if __name__ == "__main__":
    main(sys.argv[1:])
