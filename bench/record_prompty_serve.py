"""Record ``pf flow serve`` (prompt flow 1.18.5, fastapi engine) serving prompty flows.

Writes tests/serve_recordings/fastapi/prompty_*.json in that folder's format (as
record_flex_serve.py does), with the test LLM server behind the parity connections.
Run: ``python bench/record_prompty_serve.py``.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from _promptflow import ensure_venv, pf_env, venv_pf
from record_cases import create_connections
from record_flex_serve import JSON, OUT, SSE, record_exchange, wait_until_serving

from flowport.testing.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
PORT = 18604
HISTORY = [{"role": "user", "content": "First"}, {"role": "assistant", "content": "Echo: First"}]
ASK = {"role": "user", "content": "Second?"}
CASES = {
    # pf 1.18.5 serves no .prompty file ("Support directory `source` for Python flow only"): a prompty
    # is served through a flex flow that loads it (promptflow.core.Prompty)
    "prompty_in_flex": [
        ("score", "POST", "/score", JSON, {"question": "Served?"}),
        ("score_style", "POST", "/score", JSON, {"question": "Hi", "style": "formal"}),
        ("score_missing_input", "POST", "/score", JSON, {}),
        ("sse_no_stream", "POST", "/score", SSE, {"question": "a b"}),
        ("get_swagger", "GET", "/swagger.json", {}, None),
    ],
    # a chat prompty (history as OpenAI messages) behind a chat flex flow: what pf serves of it
    "prompty_chat_history": [
        ("score_history", "POST", "/score", JSON, {"question": "Second?", "chat_history": HISTORY}),
        ("score_no_history", "POST", "/score", JSON, {"question": "Alone"}),
        ("sse_no_stream", "POST", "/score", SSE, {"question": "a b"}),
        ("chat_completions", "POST", "/v1/chat/completions", JSON, {"messages": [*HISTORY, ASK]}),
        ("get_swagger", "GET", "/swagger.json", {}, None),
    ],
}


def serve(source: Path, home: Path) -> subprocess.Popen[bytes]:
    command = [str(venv_pf()), "flow", "serve", "--source", str(source), "--port", str(PORT)]
    command += ["--host", "127.0.0.1", "--engine", "fastapi", "--skip-open-browser"]
    process = subprocess.Popen(
        command, env=pf_env(home, {"PF_DISABLE_TRACING": "true"}), cwd=source,
        stdout=subprocess.DEVNULL, stderr=open(home / 'serve.log', 'ab'),  # noqa: SIM115
    )  # fmt: skip
    wait_until_serving(process, PORT, str(source), home / "serve.log")
    return process


def main() -> None:
    ensure_venv()
    with tempfile.TemporaryDirectory() as scratch, LLMServer() as server:
        home = Path(scratch)
        create_connections(home, server)
        for flow, requests in CASES.items():
            process = serve(ROOT / "tests" / "flows" / flow, home)
            stem = flow.split("/")[0]
            try:
                for name, *request in requests:
                    out_file = OUT / f"{stem}__{name}.json"
                    response = record_exchange(PORT, request, f"flows/{flow}", out_file, Path(__file__).name)
                    print(flow, name, response["status"], str(response["body"])[:300])
            finally:
                process.terminate()
                process.wait(30)
                time.sleep(1)


if __name__ == "__main__":
    main()
