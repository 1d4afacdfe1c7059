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
    "flex_generator__init_arg": ({"__args__": "--init separator=-"}, [
        ("sse", "POST", "/score", SSE, {"text": "a b c"}),
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
    command += env.pop("__args__", "").split()
    process = subprocess.Popen(
        command, env=pf_env(scratch / "home", {**env, "PF_DISABLE_TRACING": "true"}), cwd=copy,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until_serving(process, PORT, flow)
    return process


def wait_until_serving(
    process: subprocess.Popen[bytes], port: int, what: str, log: Path | None = None
) -> None:
    """Until ``pf flow serve`` on ``port`` answers ``/health`` (a minute at most)."""
    for _ in range(120):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    tail = f":\n{log.read_text()[-3000:]}" if log is not None else ""
    raise RuntimeError(f"pf flow serve of {what} did not start{tail}")


def exchange(
    port: int, method: str, path: str, headers: dict[str, str], body: object
) -> tuple[dict[str, object], dict[str, object]]:
    """One request to ``pf flow serve``: the recording's ``request`` and ``response`` parts."""
    content = json.dumps(body) if body is not None else ""
    answer = httpx.request(
        method, f"http://127.0.0.1:{port}{path}", headers=headers, content=content, timeout=30
    )
    kept = {k: v for k, v in answer.headers.items() if k == "content-type"}
    request = {"method": method, "path": path, "headers": headers, "body": content}
    return request, {"status": answer.status_code, "headers": kept, "body": answer.text}


def record_exchange(
    port: int, request: tuple[str, str, dict[str, str], object], flow: str, out_file: Path, recorder: str
) -> dict[str, object]:
    """One request (method, path, headers, body) to ``pf flow serve`` of ``flow`` (``flows/x``),
    written to ``out_file`` in tests/serve_recordings' format; the response part is returned."""
    sent, response = exchange(port, *request)
    record = {
        "flow": flow,
        "env": {"PF_DISABLE_TRACING": "true"},
        "request": sent,
        "response": response,
        "notes": f"recorded by bench/{recorder} (httpx, not a raw socket)",
    }
    out_file.write_text(json.dumps(record, indent=2) + "\n")
    return response


def main() -> None:
    ensure_venv()
    with tempfile.TemporaryDirectory() as scratch:
        for flow, (env, requests) in CASES.items():
            process = serve(flow, dict(env), Path(scratch))
            try:
                for name, method, path, headers, body in requests:
                    request, response = exchange(PORT, method, path, headers, body)
                    record = {
                        "flow": f"flows/{flow.split('__')[0]}",
                        "env": {
                            "PF_DISABLE_TRACING": "true",
                            **{k: v for k, v in env.items() if k != "__args__"},
                        },
                        **({"serve_args": env["__args__"].split()} if "__args__" in env else {}),
                        "request": request,
                        "response": response,
                        "notes": "recorded by bench/record_flex_serve.py (httpx, not a raw socket)",
                    }
                    (OUT / f"{flow}__{name}.json").write_text(json.dumps(record, indent=2) + "\n")
                    print(flow, name, response["status"], str(response["body"])[:150])
            finally:
                process.terminate()
                process.wait(30)
                time.sleep(1)  # the port is free again


if __name__ == "__main__":
    main()
