"""``make demo``: run the example chat flow end to end on this machine.

Uses a real OpenAI model when OPENAI_API_KEY is set, else flowport's offline test LLM.
State goes to FLOWPORT_HOME (default ./.flowport-demo) so the demo leaves ~ alone.
The server it starts stops at the end unless FLOWPORT_DEMO_KEEP is set (``make demo KEEP=1``):
then it keeps running in the background, with the offline LLM if the demo uses it, until
``flowport server --stop``. FLOWPORT_DEMO_PORT (``make demo PORT=9000``) picks the port.
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
import time
from contextlib import ExitStack, suppress
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
    if sys.argv[1:2] == ["offline-llm"]:  # the offline LLM kept for a server left running
        _offline_llm_while(int(sys.argv[2]), int(sys.argv[3]))
        return
    home = Path(os.environ.get("FLOWPORT_HOME", ".flowport-demo")).resolve()
    os.environ["FLOWPORT_HOME"] = str(home)
    _stop_kept_server(home)
    with ExitStack() as stack:
        connection = _connection(stack)
        executor = FlowExecutor.load(EXAMPLE, connections={"open_ai_connection": connection})
        try:
            asyncio.run(_run(executor, home))
        finally:
            executor.close()
        _endpoint_guide(home, connection)
    print("\nNext: see README.md for every command.")


def _shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it, quoted for a shell."""
    relative = os.path.relpath(path)
    return shlex.quote(relative if not relative.startswith("..") else str(path))


def _login_link(home: Path) -> str | None:
    """The one-time studio link the running server printed to its log."""
    try:
        lines = (home / "server.log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    links = [line.strip() for line in lines if "/api/v1/sessions/redeem?code=" in line]
    return links[-1] if links else None


def _keep() -> bool:
    return os.environ.get("FLOWPORT_DEMO_KEEP", "").strip().lower() not in ("", "0", "no", "false")


def _server_pid(home: Path) -> int | None:
    """The pid of the server running for ``home``, if one is."""
    try:
        pid = int(json.loads((home / "server.json").read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def _stop_kept_server(home: Path) -> None:
    """A server an earlier ``make demo KEEP=1`` left running would share this home: stop it."""
    if _server_pid(home) is not None:
        print(f"Stopping the demo server an earlier run left running ({home}).")
        _flowport("server", "--stop")


def _offline_llm_while(pid: int, port: int) -> None:
    """Serve the offline test LLM on ``port`` until process ``pid`` (the server) ends."""
    from flowport.testing.llm_server import LLMServer

    with LLMServer(latency_ms=50, port=port), suppress(ProcessLookupError, PermissionError):
        while True:
            os.kill(pid, 0)
            time.sleep(1)


def _detached_llm(home: Path, pid: int) -> str:
    """Start the offline LLM in its own process, living as long as the server; its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (home / "demo-llm.log").open("ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "flowport.demo", "offline-llm", str(pid), str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return f"http://127.0.0.1:{port}/v1"


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


def _choose_instance_user() -> None:
    """As root, instances run as ``nobody``; when ``nobody`` cannot run this interpreter (a Python
    under ``/root``), the demo's instances run as root, and it says so."""
    from flowport.runtime.base import DeploymentFailed
    from flowport.runtime.local.isolation import INSTANCE_USER_ENV, Isolation

    if os.geteuid() != 0 or os.environ.get(INSTANCE_USER_ENV):
        return
    isolation = Isolation.from_environment()
    try:
        asyncio.run(isolation.check_python(sys.executable))
    except DeploymentFailed as exc:
        os.environ[INSTANCE_USER_ENV] = "root"
        print(
            f"note: {exc.reason.split(':')[0]}; the demo's instances run as root instead. "
            "In production, install flowport where that user can read it (docs/security.md)."
        )
    finally:
        isolation.close()


def _port() -> int:
    wanted = int(os.environ.get("FLOWPORT_DEMO_PORT") or 8080)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            sock.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            sock.bind(("127.0.0.1", 0))
            print(f"port {wanted} is taken; using {sock.getsockname()[1]} (PORT=... picks another)")
            return sock.getsockname()[1]


def _endpoint_guide(home: Path, connection: OpenAIConnection) -> None:
    """Azure ML's "deploy a flow to an online endpoint" guide, with flowport where it says az ml."""
    print("\n== The Azure ML online endpoint guide, on this machine ==")
    port = _port()
    _choose_instance_user()
    _flowport("server", "--detach", "--port", str(port))
    keep = _keep()
    pid = _server_pid(home)
    if keep and connection.base_url and pid is not None and not os.environ.get("OPENAI_API_KEY"):
        # the offline LLM of this process ends with it: the server left running gets its own
        connection = OpenAIConnection(
            name=connection.name, api_key=connection.api_key, base_url=_detached_llm(home, pid)
        )
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
    except BaseException:
        _flowport("server", "--stop")
        raise
    command = _shown_path(Path(sys.executable).with_name("flowport"))
    stop = f"FLOWPORT_HOME={_shown_path(home)} {command} server --stop"
    if keep:
        link = _login_link(home)
        if link:
            print(f"studio sign-in link (works once, for 10 minutes): {link}")
        print(
            f"\nThe server keeps running in the background (pid {pid}, log {home / 'server.log'}): "
            f"the URLs above answer until you stop it with\n  {stop}"
        )
        return
    _flowport("server", "--stop")
    print(
        "\nThe demo stopped its server, so the URLs above no longer answer. To keep it running, run\n"
        "  make demo KEEP=1    (or FLOWPORT_DEMO_KEEP=1; PORT=9000 picks the port, default 8080)\n"
        "then stop it with\n"
        f"  {stop}"
    )


if __name__ == "__main__":
    main()
