"""The ``flowport`` command, run as a real subprocess with its own FLOWPORT_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from flowport.testing.llm_server import LLMServer
from tests.conftest import FLOWS, free_port


def flowport(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "FLOWPORT_HOME": str(home), **(env or {})}
    full_env.pop("FLOWPORT_SECRET_KEY", None)
    full_env.pop("FLOWPORT_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flowport.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def test_flow_test_prints_outputs_as_json(tmp_path: Path) -> None:
    done = flowport(
        "flow", "test", "--flow", str(FLOWS / "three_node_python"), "--inputs", "text=a b", home=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"result": "A B (2 words)"}


def test_flow_test_inputs_file_variant_and_node(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"text": "x y z"}))
    node = flowport(
        "flow",
        "test",
        "--flow",
        str(FLOWS / "three_node_python"),
        "--inputs-file",
        str(inputs),
        "--node",
        "count_words",
        home=tmp_path,
    )
    assert node.returncode == 0, node.stderr
    assert json.loads(node.stdout) == 3
    cases = {c["id"]: c for c in json.loads((FLOWS / "variants" / "cases.json").read_text())}
    case = next(c for c in cases.values() if c.get("variant") and "expected" in c)
    args = [f"{k}={v}" for k, v in case["inputs"].items()]
    variant = flowport(
        "flow",
        "test",
        "--flow",
        str(FLOWS / "variants"),
        "--variant",
        case["variant"],
        "--inputs",
        *args,
        home=tmp_path,
    )
    assert variant.returncode == 0, variant.stderr
    assert json.loads(variant.stdout) == case["expected"]


def test_streamed_output_is_shown_as_it_comes_and_joined_in_json(tmp_path: Path) -> None:
    done = flowport("flow", "test", "--flow", str(FLOWS / "streaming"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["streamed"] == "one two three"
    assert "one two three" in done.stderr


def test_failures_exit_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    tool_error = flowport(
        "flow", "test", "--flow", str(FLOWS / "tool_error"), "--inputs", "text=bad", home=tmp_path
    )
    assert tool_error.returncode == 1
    assert (
        json.loads(tool_error.stderr)["error"]["message"]
        == "Execution failure in 'check': (ValueError) bad value"
    )
    invalid = flowport("flow", "validate", "--flow", str(FLOWS / "err_cycle"), home=tmp_path)
    assert invalid.returncode == 1
    assert "flow.dag.yaml:" in invalid.stderr and "[NodeCircularDependency]" in invalid.stderr
    assert "Traceback" not in invalid.stderr
    missing = flowport("flow", "test", "--flow", str(tmp_path / "nowhere"), home=tmp_path)
    assert missing.returncode == 1 and "FlowNotFound" in missing.stderr


def test_validate_reports_the_flow(tmp_path: Path) -> None:
    done = flowport("flow", "validate", "--flow", str(FLOWS / "three_node_python"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is True
    assert report["nodes"] == ["to_upper", "count_words", "format_result"]


def test_connection_verbs_and_an_llm_flow(tmp_path: Path, llm_server: LLMServer) -> None:
    spec = tmp_path / "conn.yaml"
    spec.write_text(
        f"name: open_ai_connection\ntype: open_ai\napi_key: placeholder\nbase_url: {llm_server.base_url}\n"
    )
    created = flowport(
        "connection", "create", "--file", str(spec), "--set", "api_key=sk-cli-secret", home=tmp_path
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["api_key"] == "******"
    listed = json.loads(flowport("connection", "list", home=tmp_path).stdout)
    assert [c["name"] for c in listed] == ["open_ai_connection"]
    assert "sk-cli-secret" not in json.dumps(listed)
    shown = flowport("connection", "show", "-n", "open_ai_connection", "--show-secrets", home=tmp_path)
    assert json.loads(shown.stdout)["api_key"] == "sk-cli-secret"
    assert b"sk-cli-secret" not in (tmp_path / "flowport.db").read_bytes()

    flow = tmp_path / "chat"
    flow.mkdir()
    (flow / "chat.jinja2").write_text("# user:\n{{ question }}\n")
    (flow / "flow.dag.yaml").write_text(
        "inputs:\n  question: {type: string, is_chat_input: true}\n"
        "outputs:\n  answer: {type: string, reference: '${chat.output}', is_chat_output: true}\n"
        "nodes:\n- name: chat\n  type: llm\n  source: {type: code, path: chat.jinja2}\n"
        "  connection: open_ai_connection\n  api: chat\n"
        "  inputs: {model: m, question: '${inputs.question}'}\n"
    )
    answered = flowport(
        "flow", "test", "--flow", str(flow), "--inputs", "question=hello there", home=tmp_path
    )
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == {"answer": "Echo: hello there"}

    deleted = flowport("connection", "delete", "-n", "open_ai_connection", home=tmp_path)
    assert deleted.returncode == 0
    gone = flowport("connection", "show", "-n", "open_ai_connection", home=tmp_path)
    assert gone.returncode == 1 and "does not exist" in gone.stderr


def test_connection_list_prints_json_yaml_or_a_table(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a-conn\ntype: open_ai\napi_key: sk-a\nbase_url: http://a\n")
    (tmp_path / "b.yaml").write_text("name: b-conn\ntype: custom\nconfigs: {x: 1}\nsecrets: {k: sk-b}\n")
    for spec in ("a.yaml", "b.yaml"):
        assert (
            flowport("connection", "create", "-f", str(tmp_path / spec), "-o", "none", home=tmp_path).stdout
            == ""
        )
    table = flowport("connection", "list", "-o", "table", home=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["name", "type", "base_url", "api_key"]
    assert lines[2].split() == ["a-conn", "open_ai", "http://a", "******"]
    assert lines[3].split() == ["b-conn", "custom"]
    listed = yaml.safe_load(flowport("connection", "list", "-o", "yaml", home=tmp_path).stdout)
    assert [c["name"] for c in listed] == ["a-conn", "b-conn"]
    assert listed[1]["secrets"] == {"k": "******"}
    tsv = flowport("connection", "list", "--output", "tsv", home=tmp_path).stdout
    assert tsv.splitlines()[0].split("\t") == ["a-conn", "open_ai", "http://a", "******"]
    shown = flowport("connection", "show", "-n", "a-conn", "-o", "yaml", home=tmp_path).stdout
    assert yaml.safe_load(shown)["base_url"] == "http://a"
    wrong = flowport("connection", "list", "-o", "xml", home=tmp_path)
    assert wrong.returncode == 2 and "xml" in wrong.stderr and "Traceback" not in wrong.stderr


def test_bad_connection_file_is_reported(tmp_path: Path) -> None:
    spec = tmp_path / "conn.yaml"
    spec.write_text("name: c\ntype: open_ai\n")
    done = flowport("connection", "create", "--file", str(spec), home=tmp_path)
    assert done.returncode == 1
    assert "missing api_key" in done.stderr


def test_connection_file_with_an_unquoted_date_loads(tmp_path: Path) -> None:
    spec = tmp_path / "aoai.yaml"
    spec.write_text(
        "name: a\ntype: azure_open_ai\napi_key: k\napi_base: https://x\napi_version: 2024-02-01\n"
    )
    done = flowport("connection", "create", "--file", str(spec), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["api_version"] == "2024-02-01"


def test_bulk_run_records_lines_failures_and_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    rows = [
        {"a": " Paris", "exp": "paris"},
        {"a": "Rome", "exp": "paris"},
        {"a": "boom", "exp": "x"},
        {"a": "Lima", "exp": "lima"},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    created = flowport(
        "run",
        "create",
        "--flow",
        str(FLOWS / "aggregation"),
        "--data",
        str(data),
        "--column-mapping",
        "answer=${data.a}",
        "--column-mapping",
        "expected=${data.exp}",
        "--name",
        "first",
        home=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    summary = json.loads(created.stdout)
    assert (summary["total"], summary["completed"], summary["failed"]) == (4, 3, 1)
    assert summary["metrics"] == {"accuracy": pytest.approx(0.6667), "count": 3, "weighted_total": 2.0}
    metrics = json.loads(flowport("run", "show-metrics", "-n", "first", home=tmp_path).stdout)
    assert metrics["count"] == 3
    details = json.loads(flowport("run", "show-details", "-n", "first", "-o", "json", home=tmp_path).stdout)
    assert [d["status"] for d in details] == ["Completed", "Completed", "Failed", "Completed"]
    assert details[1]["outputs"] == {"score": 0.0, "normalized": "rome"}
    assert "cannot normalize boom" in details[2]["error"]
    outputs = (tmp_path / "runs" / "first" / "outputs.jsonl").read_text().splitlines()
    assert [json.loads(line)["line_number"] for line in outputs] == [0, 1, 3]
    listed = json.loads(flowport("run", "list", home=tmp_path).stdout)
    assert [r["name"] for r in listed] == ["first"]

    follow = flowport(
        "run",
        "create",
        "--flow",
        str(FLOWS / "three_node_python"),
        "--data",
        str(data),
        "--run",
        "first",
        "--column-mapping",
        "text=${run.outputs.normalized}",
        "--name",
        "second",
        home=tmp_path,
    )
    assert follow.returncode == 0, follow.stderr
    lines = [json.loads(x) for x in (tmp_path / "runs" / "second" / "outputs.jsonl").read_text().splitlines()]
    assert lines[0] == {"line_number": 0, "result": "PARIS (1 words)"}
    again = flowport(
        "run",
        "create",
        "--flow",
        str(FLOWS / "three_node_python"),
        "--data",
        str(data),
        "--name",
        "first",
        home=tmp_path,
    )
    assert again.returncode == 1 and "already exists" in again.stderr


def test_bad_data_file_names_the_line(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "ok"}\nnot json\n')
    done = flowport(
        "run", "create", "--flow", str(FLOWS / "three_node_python"), "--data", str(data), home=tmp_path
    )
    assert done.returncode == 1
    assert "data.jsonl:2" in done.stderr


def test_tools_run_from_the_flow_folder(tmp_path: Path) -> None:
    flow = tmp_path / "reads_file"
    flow.mkdir()
    (flow / "greeting.txt").write_text("hello from a file")
    (flow / "read.py").write_text("def read():\n    return open('greeting.txt').read()\n")
    (flow / "flow.dag.yaml").write_text(
        "outputs:\n  text: {reference: '${read.output}'}\n"
        "nodes:\n- name: read\n  type: python\n  source: {type: code, path: read.py}\n"
    )
    done = flowport("flow", "test", "--flow", str(flow), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"text": "hello from a file"}


def test_dev_llm_server_serves_the_openai_api(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flowport.cli.main", "dev", "llm-server", "--port", str(port)],
        env={**os.environ, "FLOWPORT_HOME": str(tmp_path)},
        stderr=subprocess.PIPE,
    )
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=5)
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "ping"}]
                )
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert reply.choices[0].message.content == "Echo: ping"
    finally:
        process.terminate()
        process.wait(10)


def test_flow_test_shows_llm_retries_and_fails_fast_on_an_unreachable_llm(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    def home_with_llm_at(name: str, base_url: str) -> Path:
        home = tmp_path / name
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(f"name: open_ai_connection\ntype: open_ai\napi_key: k\nbase_url: {base_url}\n")
        assert flowport("connection", "create", "--file", str(spec), home=home).returncode == 0
        return home

    question = f"question={uuid.uuid4().hex} [[flaky:429:2]]"
    busy = home_with_llm_at("busy", llm_server.base_url)
    done = flowport("flow", "test", "--flow", str(FLOWS / "chat_llm"), "--inputs", question, home=busy)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"].startswith("Echo: ")
    retries = [line for line in done.stderr.splitlines() if line.startswith("LLM node")]
    assert retries == [
        "LLM node 'chat' (connection 'open_ai_connection'): RateLimitError: Error code: 429 - "
        f"triggered error 429; attempt {n}/5 failed, retrying in 0 s"
        for n in (1, 2)
    ]

    port = free_port()
    down = home_with_llm_at("down", f"http://127.0.0.1:{port}/v1")
    failed = flowport("flow", "test", "--flow", str(FLOWS / "chat_llm"), "--inputs", "question=hi", home=down)
    assert failed.returncode == 1
    assert (
        f"LLM node 'chat': cannot reach http://127.0.0.1:{port}/v1/chat/completions for connection "
        "'open_ai_connection': connection refused. Check the connection's base_url." in failed.stderr
    )
    assert "Traceback" not in failed.stderr


def test_the_demo_stops_its_server_unless_asked_to_keep_it(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWPORT_HOME": str(tmp_path / "demo"), "FLOWPORT_DEMO_PORT": str(free_port())}
    for name in ("OPENAI_API_KEY", "FLOWPORT_SECRET_KEY", "FLOWPORT_DATABASE_URL", "FLOWPORT_URL"):
        env.pop(name, None)

    def demo(**extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "flowport.demo"],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=240,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        return done.stdout

    kept = demo(FLOWPORT_DEMO_KEEP="1")
    assert "The server keeps running in the background" in kept
    assert "server --stop" in kept.splitlines()[-3]
    curl = next(line for line in kept.splitlines() if line.startswith("curl: "))
    uri, key = curl.split()[3], curl.split("Bearer ")[1].split("'")[0]
    request = (tmp_path / "demo" / "request.json").read_bytes()
    answer = httpx.post(uri, content=request, headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert answer.json() == {"answer": "Echo: What is flowport?"}  # after the demo ended, offline LLM too

    stopped = demo()  # stops the kept server first: one server per home
    assert "Stopping the demo server an earlier run left running" in stopped
    assert "The demo stopped its server, so the URLs above no longer answer" in stopped
    assert "make demo KEEP=1" in stopped
    with pytest.raises(httpx.TransportError):
        httpx.post(uri, content=request, headers={"authorization": f"Bearer {key}"}, timeout=5)


def test_the_package_states_its_licence_as_an_spdx_string() -> None:
    """A licence table makes setuptools warn on every install; the SPDX string needs setuptools 77."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_bad_yaml_files_are_one_line_errors_not_tracebacks(tmp_path: Path) -> None:
    latin = tmp_path / "endpoint.yml"
    latin.write_bytes("name: cafe\ndescription: caf\u00e9\n".encode("latin-1"))
    env = {"FLOWPORT_URL": f"http://127.0.0.1:{free_port()}", "FLOWPORT_ADMIN_TOKEN": "unused"}
    done = flowport("online-endpoint", "create", "--file", str(latin), home=tmp_path, env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: {latin}:2: the file is not UTF-8 text (byte 0xe9 at offset 27); "
        "save it as UTF-8 [InvalidEncoding]"
    )
    bomb = tmp_path / "conn.yaml"
    text = "name: c\ntype: custom\nconfigs:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for previous, name in zip("abcde", "bcdef", strict=True):
        text += f"  {name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n"
    bomb.write_text(text)
    refused = flowport("connection", "create", "--file", str(bomb), home=tmp_path)
    assert refused.returncode == 1
    assert f"{bomb}:8:" in refused.stderr and "[YamlTooLarge]" in refused.stderr
    assert "Traceback" not in done.stderr + refused.stderr


def test_validate_names_the_tool_that_fails_to_import(tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text(
        "inputs:\n  t: {type: string}\noutputs:\n  o: {reference: '${a.output}'}\n"
        "nodes:\n- name: a\n  type: python\n  source: {type: code, path: a.py}\n"
        "  inputs: {t: '${inputs.t}'}\n"
    )
    (flow / "a.py").write_text("import os\nimport flowport_missing_module\n\ndef a(t: str):\n    return t\n")
    done = flowport("flow", "validate", "--flow", str(flow), home=tmp_path)
    assert done.returncode == 1
    assert "flow.dag.yaml:6: node 'a': importing a.py failed at a.py:2: (ModuleNotFoundError)" in done.stderr


def _recording_api() -> tuple[object, list[dict[str, object]]]:
    """A stand-in flowport API on loopback that records what the CLI sends and answers plainly."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    seen: list[dict[str, object]] = []

    async def record(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append(
            {
                "method": request.method,
                "path": request.url.path.removeprefix("/api/v1"),
                "query": dict(request.query_params),
                "body": json.loads(body) if body else None,
            }
        )
        if request.url.path.endswith("/logs"):
            return JSONResponse({"lines": ["first", "second"]})
        operation = {"id": "op", "status": "Succeeded", "kind": "x"}
        return JSONResponse({"operation": operation, "endpoint": {"name": "ep"}, "notes": [], "name": "x"})

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", record, methods=methods)]), seen


def test_az_flags_from_the_azure_guide_and_az_help_reach_the_api(tmp_path: Path) -> None:
    from flowport.testing.threaded_server import ThreadedServer

    app, seen = _recording_api()
    deployment = tmp_path / "blue.yml"
    deployment.write_text("name: blue\nendpoint_name: ep\nmodel: azureml:m:1\n")
    ignored = ["-g", "rg", "-w", "ws", "--subscription", "sub"]
    with ThreadedServer(app) as server:
        env = {"FLOWPORT_URL": server.url, "FLOWPORT_ADMIN_TOKEN": "t"}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            done = flowport(*args, *ignored, home=tmp_path / "home", env=env)
            assert done.returncode == 0, done.stderr
            return done

        logs = run(
            "online-deployment", "get-logs", "--name", "blue", "--endpoint", "ep", "--lines", "5", "-c", "x"
        )
        assert logs.stdout.splitlines() == ["first", "second"]
        run("online-deployment", "create", "--file", str(deployment), "--all-traffic", "--local", "--web")
        run(
            "online-deployment",
            "create",
            "-f",
            str(deployment),
            "--package-model",
            "--skip-script-validation",
        )
        run(
            "online-deployment",
            "update",
            "-n",
            "blue",
            "--endpoint",
            "ep",
            "--set",
            "instance_count=2",
            "--no-wait",
        )
        run("online-deployment", "show", "-n", "blue", "--endpoint", "ep", "--web")
        run(
            "online-endpoint", "update", "-n", "ep", "--set", "description=010", "--force-string",
            "--add", "tags", "team=ml", "--remove", "tags.old", "--local", "--web",
        )  # fmt: skip
        run("model", "create", "-n", "m", "-p", str(tmp_path), "-t", "custom_model", "-d", "010")
    requests = [(r["method"], r["path"], r["query"]) for r in seen]
    assert requests[0] == ("GET", "/endpoints/ep/deployments/blue/logs", {"lines": "5"})
    assert requests[1][:2] == ("POST", "/endpoints/ep/deployments")
    assert requests[1][2] == {"name": "blue", "all_traffic": "true"}
    patch = next(r for r in seen if r["method"] == "PATCH" and r["path"] == "/endpoints/ep/deployments/blue")
    assert patch["body"] == {"set": ["instance_count=2"]}
    endpoint = next(r for r in seen if r["path"] == "/endpoints/ep" and r["method"] == "PATCH")
    assert endpoint["body"] == {
        "set": ["description=010"],
        "add": [["tags", "team=ml"]],
        "remove": ["tags.old"],
        "force_string": True,
    }
    model = next(r for r in seen if r["path"] == "/models")
    expected = {"name=m", "type=custom_model", f"path={tmp_path.resolve()}", "description=010"}
    assert set(model["body"]["set"]) == expected
    assert model["body"]["force_string"] is True
