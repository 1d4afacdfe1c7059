"""``make demo``: run the example chat flow end to end on this machine.

Uses a real OpenAI model when OPENAI_API_KEY is set, else flowport's offline test LLM.
State goes to FLOWPORT_HOME (default ./.flowport-demo) so the demo leaves ~ alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from flowport.connections import OpenAIConnection
from flowport.engine import FlowExecutor, NodeStream
from flowport.engine.bulk import BulkRunner, read_jsonl

EXAMPLE = Path(__file__).parent / "examples" / "chat_basic"
AZURE = Path(__file__).parent / "examples" / "azure"
ENDPOINT = "basic-chat-endpoint"


def _connection(stack: ExitStack) -> OpenAIConnection:
    if os.environ.get("OPENAI_API_KEY"):
        print("LLM: OpenAI (OPENAI_API_KEY is set)")
        return OpenAIConnection(name="open_ai_connection", api_key=os.environ["OPENAI_API_KEY"])
    from flowport.testing.llm_server import LLMServer

    server = stack.enter_context(LLMServer(latency_ms=50))
    print(f"LLM: flowport's offline test model at {server.base_url} (set OPENAI_API_KEY for a real one)")
    return OpenAIConnection(name="open_ai_connection", api_key="demo", base_url=server.base_url)


async def _run(executor: FlowExecutor, home: Path) -> None:
    question = "How do I deploy a prompt flow on my own machine?"
    print(f"\n$ flowport flow test --flow {EXAMPLE} --inputs question={question!r}")
    result = await executor.run_line({"question": question}, stream=True)
    if result.error:
        raise SystemExit(json.dumps(result.error.response(), indent=2))
    outputs = {}
    for key, value in result.outputs.items():
        if isinstance(value, NodeStream):
            print("streaming: ", end="", flush=True)
            parts = []
            async for chunk in value:
                parts.append(chunk)
                print(chunk, end="", flush=True)
            print()
            value = "".join(parts)
        outputs[key] = value
    print(json.dumps(outputs, indent=2))
    print(f"tokens: {result.run.usage.to_dict()}")

    run_dir = home / "runs" / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)
    mapping = {"question": "${data.question}"}
    print(
        f"\n$ flowport run create --flow {EXAMPLE} --data {EXAMPLE / 'data.jsonl'} "
        "--column-mapping 'question=${data.question}' --name demo"
    )
    rows = read_jsonl(EXAMPLE / "data.jsonl")
    summary = await BulkRunner(executor).run(rows, run_dir, name="demo", column_mapping=mapping)
    print(f"{summary.completed}/{summary.total} lines completed in {summary.duration:.2f}s -> {run_dir}")
    for line in (run_dir / "outputs.jsonl").read_text().splitlines():
        print("  " + line)


def main() -> None:
    home = Path(os.environ.get("FLOWPORT_HOME", ".flowport-demo")).resolve()
    os.environ["FLOWPORT_HOME"] = str(home)
    with ExitStack() as stack:
        connection = _connection(stack)
        executor = FlowExecutor.load(EXAMPLE, connections={"open_ai_connection": connection})
        try:
            asyncio.run(_run(executor, home))
        finally:
            executor.close()
        _endpoint_guide(home, connection)
    print("\nNext: see README.md for every command.")


def _flowport(*args: str, show: bool = True) -> str:
    """Run one CLI command as a user would, echoing it; returns its stdout."""
    print(f"\n$ flowport {' '.join(shlex.quote(a) for a in args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "flowport.cli.main", *args], capture_output=True, text=True)
    if done.stderr.strip():
        print(done.stderr.rstrip(), flush=True)
    if done.returncode != 0:
        raise SystemExit(f"demo step failed: flowport {' '.join(args)}")
    if show and done.stdout.strip():
        print(done.stdout.rstrip(), flush=True)
    return done.stdout


def _port() -> int:
    wanted = int(os.environ.get("FLOWPORT_DEMO_PORT") or 8080)
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def _endpoint_guide(home: Path, connection: OpenAIConnection) -> None:
    """Azure ML's "deploy a flow to an online endpoint" guide, with flowport where it says az ml."""
    print("\n== The Azure ML online endpoint guide, on this machine ==")
    port = _port()
    _flowport("server", "--detach", "--port", str(port))
    try:
        existing = json.loads(_flowport("online-endpoint", "list", show=False))
        if any(e["name"] == ENDPOINT for e in existing):
            _flowport("online-endpoint", "delete", "-n", ENDPOINT, "--yes")
        spec = home / "open_ai_connection.yaml"
        spec.write_text(f"name: open_ai_connection\ntype: open_ai\napi_key: {connection.api_key}\n")
        base_url = ["--set", f"base_url={connection.base_url}"] if connection.base_url else []
        _flowport("connection", "create", "--file", str(spec), *base_url, show=False)
        spec.unlink()
        _flowport("model", "create", "--file", str(AZURE / "model.yaml"), show=False)
        _flowport("online-endpoint", "create", "--file", str(AZURE / "endpoint.yml"), show=False)
        _flowport("online-deployment", "create", "--file", str(AZURE / "blue-deployment.yml"), show=False)
        _flowport("online-endpoint", "update", "-n", ENDPOINT, "--traffic", "blue=100", "-o", "table")
        request = home / "request.json"
        request.write_text(json.dumps({"question": "What is flowport?", "chat_history": []}))
        _flowport("online-endpoint", "invoke", "-n", ENDPOINT, "--request-file", str(request))
        endpoint = json.loads(_flowport("online-endpoint", "show", "-n", ENDPOINT, show=False))
        key = json.loads(_flowport("online-endpoint", "get-credentials", "-n", ENDPOINT, show=False))[
            "primaryKey"
        ]
        print(f"\nscoring URI: {endpoint['scoring_uri']}")
        print(
            f"curl: curl -s {endpoint['scoring_uri']} -H 'authorization: Bearer {key}' "
            f"-H 'content-type: application/json' -d @{request}"
        )
        studio = endpoint["scoring_uri"].split("/endpoints/")[0] + "/"
        print(f"studio: {studio} (sign in with the token in {home / 'admin_token'} or server.log's link)")
        if os.environ.get("FLOWPORT_DEMO_KEEP"):
            input("\nThe server is running; press Enter to stop it. ")
    finally:
        _flowport("server", "--stop")


if __name__ == "__main__":
    main()
