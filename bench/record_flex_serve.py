"""Record ``pf flow serve`` (prompt flow 1.18.5, fastapi engine) answering flex flows.

Writes tests/serve_recordings/fastapi/flex_*.json in that folder's format (see its README): one
request each, sent with httpx (the headers listed are the ones given), the answer as received.
Run: ``python bench/record_flex_serve.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from _promptflow import ensure_venv, pf_env, venv_pf

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "serve_recordings" / "fastapi"
PORT = 18603
JSON = {"Content-Type": "application/json"}
SSE = {**JSON, "Accept": "text/event-stream"}
HISTORY = {"inputs": {"question": "a"}, "outputs": {"answer": "b"}}
CASES: dict[str, tuple[dict[str, str], list[tuple[str, str, str, dict[str, str], object]]]] = {
    "flex_function": ({}, [
        ("score", "POST", "/score", JSON, {"question": "a b c", "count": 3}),
        ("score_missing_input", "POST", "/score", JSON, {}),
        ("score_bad_int", "POST", "/score", JSON, {"question": "q", "count": "abc"}),
        ("score_sse_no_stream", "POST", "/score", SSE, {"question": "a b"}),
        ("get_swagger", "GET", "/swagger.json", {}, None),
    ]),
    # flex_class is not served: pf 1.18.5's server crashes on `sample: ${file:...}` (a str, not read)
    "flex_async": ({}, [("score", "POST", "/score", JSON, {"numbers": [1, 2], "offset": 1})]),
    "flex_generator": ({}, [
        ("sse", "POST", "/score", SSE, {"text": "one two three"}),
        ("json", "POST", "/score", JSON, {"text": "one two three"}),
        ("get_swagger", "GET", "/swagger.json", {}, None),
    ]),
    "flex_generator__init_env": ({"PROMPTFLOW_FLOW_INIT_CONFIG": '{"separator": "-"}'}, [
        ("sse", "POST", "/score", SSE, {"text": "a b c"}),
        ("json", "POST", "/score", JSON, {"text": "a b c"}),
    ]),
    "flex_dataclass": ({}, [
        ("score", "POST", "/score", JSON, {"text": "hello there world"}),
        ("get_swagger", "GET", "/swagger.json", {}, None),
    ]),
    "flex_chat": ({}, [
        ("score", "POST", "/score", JSON, {"question": "hi", "chat_history": [HISTORY]}),
        ("get_swagger", "GET", "/swagger.json", {}, None),
    ]),
    "flex_non_dict": ({}, [
        ("score", "POST", "/score", JSON, {"text": "hey"}),
        ("score_list", "POST", "/score", JSON, {"text": "hey", "as_list": True}),
    ]),
}  # fmt: skip


def serve(flow: str, env: dict[str, str], scratch: Path) -> subprocess.Popen[bytes]:
    copy = scratch / flow
    shutil.copytree(
        ROOT / "tests" / "flows" / flow.split("__")[0], copy, ignore=shutil.ignore_patterns("cases.json")
    )
    command = [str(venv_pf()), "flow", "serve", "--source", str(copy), "--port", str(PORT)]
    command += ["--host", "127.0.0.1", "--engine", "fastapi", "--skip-open-browser"]
    process = subprocess.Popen(
        command, env=pf_env(scratch / "home", {**env, "PF_DISABLE_TRACING": "true"}), cwd=copy,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(120):
        try:
            httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"pf flow serve of {flow} did not start")


def main() -> None:
    ensure_venv()
    with tempfile.TemporaryDirectory() as scratch:
        for flow, (env, requests) in CASES.items():
            process = serve(flow, env, Path(scratch))
            try:
                for name, method, path, headers, body in requests:
                    content = json.dumps(body) if body is not None else ""
                    answer = httpx.request(
                        method, f"http://127.0.0.1:{PORT}{path}", headers=headers, content=content, timeout=30
                    )
                    kept = {k: v for k, v in answer.headers.items() if k == "content-type"}
                    record = {
                        "flow": f"flows/{flow.split('__')[0]}",
                        "env": {"PF_DISABLE_TRACING": "true", **env},
                        "request": {"method": method, "path": path, "headers": headers, "body": content},
                        "response": {"status": answer.status_code, "headers": kept, "body": answer.text},
                        "notes": "recorded by bench/record_flex_serve.py (httpx, not a raw socket)",
                    }
                    (OUT / f"{flow}__{name}.json").write_text(json.dumps(record, indent=2) + "\n")
                    print(flow, name, answer.status_code, answer.text[:150])
            finally:
                process.terminate()
                process.wait(30)
                time.sleep(1)  # the port is free again


if __name__ == "__main__":
    main()
