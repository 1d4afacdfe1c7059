"""``make demo``: run the example chat flow end to end on this machine.

Uses a real OpenAI model when OPENAI_API_KEY is set, else flowport's offline test LLM.
State goes to FLOWPORT_HOME (default ./.flowport-demo) so the demo leaves ~ alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

from flowport.connections import OpenAIConnection
from flowport.engine import FlowExecutor, NodeStream
from flowport.engine.bulk import BulkRunner, read_jsonl

EXAMPLE = Path(__file__).parent / "examples" / "chat_basic"


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
        _serve(connection)
    print("\nNext: `flowport flow test --flow <your flow>`; see README.md for every command.")


def _serve(connection: OpenAIConnection) -> None:
    """Serve the flow over HTTP for a moment, as `flowport flow serve` does, and call it."""
    import httpx

    from flowport.serving import ScoringApp
    from flowport.testing.threaded_server import ThreadedServer

    executor = FlowExecutor.load(EXAMPLE, connections={"open_ai_connection": connection})
    with ThreadedServer(ScoringApp(executor), lifespan="on") as server:
        body = {"question": "Can I stream answers?"}
        print(f"\n$ flowport flow serve --source {EXAMPLE} --port {server.port}")
        print(f"$ curl -s {server.url}/score -H 'content-type: application/json' -d '{json.dumps(body)}'")
        response = httpx.post(f"{server.url}/score", json=body, timeout=30)
        print(f"{response.status_code} {response.text}")
        print(f"$ curl -sN {server.url}/score -H 'accept: text/event-stream' -d '{json.dumps(body)}'")
        with httpx.stream(
            "POST", f"{server.url}/score", json=body, headers={"accept": "text/event-stream"}, timeout=30
        ) as stream:
            for line in stream.iter_lines():
                if line:
                    print(line)


if __name__ == "__main__":
    main()
