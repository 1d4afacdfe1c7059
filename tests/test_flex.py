"""Flex flows: loading, init arguments, serving (/score, SSE, swagger) and the CLI.

Outputs compared with prompt flow itself are in tests/flows/flex_*/cases.json (replayed by
test_prompt_flow_parity.py); this file covers what those recordings cannot: serving, the
init sources, and what ``flow test`` says about paths it cannot run.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowport.engine import FlexExecutor, Status, load_executor, parse_init
from flowport.engine.inline import InlinePolicy
from flowport.flow import FlowError
from flowport.serving import ScoringApp, ServeSettings
from flowport.testing.threaded_server import ThreadedServer
from tests.conftest import FLOWS
from tests.test_cli import flowport


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[ThreadedServer]:
    executor = load_executor(FLOWS / request.param)
    server = ThreadedServer(ScoringApp(executor, ServeSettings()), lifespan="on").start()
    yield server
    server.stop()


@pytest.mark.parametrize("served", ["flex_class"], indirect=True)
def test_class_entry_serves_score_and_swagger(served: ThreadedServer) -> None:
    answer = httpx.post(f"{served.url}/score", json={"name": "Ada"})
    assert answer.status_code == 200
    assert answer.json() == {"text": "Hello, Ada!", "init_types": ["str", "int"]}
    missing = httpx.post(f"{served.url}/score", json={})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "UserError"
    swagger = httpx.get(f"{served.url}/swagger.json").json()
    schema = swagger["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"name", "punctuation"}


@pytest.mark.parametrize("served", ["flex_generator"], indirect=True)
def test_generator_entry_streams_over_sse_and_joins_in_json(served: ThreadedServer) -> None:
    events = httpx.post(
        f"{served.url}/score", json={"text": "one two three"}, headers={"accept": "text/event-stream"}
    )
    assert events.status_code == 200
    frames = [json.loads(x[len("data: ") :]) for x in events.text.split("\n\n") if x]
    assert frames == [{"output": "one"}, {"output": " two"}, {"output": " three"}]
    joined = httpx.post(f"{served.url}/score", json={"text": "one two"})
    assert joined.json() == "one two"  # as pf flow serve: a non-dict result is answered bare


@pytest.mark.parametrize("served", ["flex_dataclass"], indirect=True)
def test_dataclass_result_is_its_fields(served: ThreadedServer) -> None:
    answer = httpx.post(f"{served.url}/score", json={"text": "abc"})
    assert answer.json() == {"label": "short", "value": 0.3, "reasons": ["abc"]}
    swagger = httpx.get(f"{served.url}/swagger.json").json()
    assert "paths" in swagger


def test_init_from_environment_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTFLOW_FLOW_INIT_CONFIG", json.dumps({"greeting": "Env", "times": 1}))
    from flowport.flow.flex import load_flex

    executor = FlexExecutor.load(load_flex(FLOWS / "flex_class"))
    assert executor.instance.greeting == "Env"
    executor.close()
    executor = FlexExecutor.load(load_flex(FLOWS / "flex_class"), init={"greeting": "Arg"})
    assert executor.instance.greeting == "Arg"
    executor.close()


def test_init_parsing(tmp_path: Path) -> None:
    assert parse_init(['{"a": 1}']) == {"a": 1}
    assert parse_init(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    file = tmp_path / "init.yaml"
    file.write_text("greeting: Hi\ntimes: 3\n")
    assert parse_init([str(file)]) == {"greeting": "Hi", "times": 3}
    with pytest.raises(FlowError, match="not valid JSON"):
        parse_init(["{broken"])


def test_missing_init_argument_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FLOWS / "flex_class")
    with pytest.raises(FlowError, match="needs 'greeting'"):
        load_executor("greeter:Greeter")


def test_flow_test_runs_a_bare_entry_and_validate_reports_it(tmp_path: Path) -> None:
    done = flowport(
        "flow", "test", "--flow", str(FLOWS / "flex_class"), "--inputs", "name=Bob",
        "--init", '{"greeting": "Yo", "times": 2}', home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "Yo, Bob! Yo, Bob!"
    valid = flowport("flow", "validate", "--flow", str(FLOWS / "flex_dataclass"), home=tmp_path)
    assert valid.returncode == 0, valid.stderr
    report = json.loads(valid.stdout)
    assert report["entry"] == "scored:score"
    assert report["outputs"] == ["label", "value", "reasons"]


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({}, "it is empty"),
        ({"tool.py": "def f(x):\n    return x\n"}, "holds Python files (tool.py) but no flow YAML"),
        (
            {"chat.prompty": "---\nname: x\n---\nuser: hi\n", "other.prompty": "---\nname: y\n---\n"},
            "holds chat.prompty, other.prompty; give one of them as the flow",
        ),
    ],
)
def test_flow_test_refuses_what_it_cannot_run(tmp_path: Path, files: dict[str, str], says: str) -> None:
    folder = tmp_path / "flow"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    done = flowport("flow", "test", "--flow", str(folder), home=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    if files and next(iter(files)).endswith(".py"):
        single = flowport("flow", "test", "--flow", str(folder / "tool.py"), home=tmp_path)
        assert single.returncode == 1
        assert "is a Python file, not a flow; for a flex flow give --flow tool:<function>" in single.stderr
    if files and next(iter(files)).endswith(".prompty"):
        single = flowport("flow", "test", "--flow", str(folder / "chat.prompty"), home=tmp_path)
        assert single.returncode == 1
        assert "model.configuration.type is missing; give 'openai' or 'azure_openai'" in single.stderr


def test_unknown_connection_for_an_init_argument_is_named(tmp_path: Path) -> None:
    done = flowport(
        "flow", "test", "--flow", str(FLOWS / "flex_connection"), "--init", "conn=no_such_conn", home=tmp_path
    )
    assert done.returncode == 1
    assert (
        "init argument 'conn' of Reader names connection 'no_such_conn', which does not exist" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_a_flex_flow_registers_as_a_model(tmp_path: Path) -> None:
    from flowport.control.models import flow_interface, snapshot_flow

    snapshot, _, flow = snapshot_flow(FLOWS / "flex_connection", tmp_path / "home" / "models")
    assert (snapshot / "flow.flex.yaml").is_file()
    assert (snapshot / "reader.py").is_file()
    assert flow_interface(flow)["entry"] == "reader:Reader"
    assert "open_ai_connection" in flow.connection_candidates()  # its sample init names it


def test_a_flex_flow_deploys_as_an_endpoint(home: Path) -> None:
    from tests.endpoint_harness import Flowport

    with Flowport(home) as fp:
        fp.endpoint("flexy")
        init = json.dumps({"greeting": "Welcome", "times": 1})
        fp.deploy(
            "flexy",
            "blue",
            model={"path": str(FLOWS / "flex_class")},
            environment_variables={"PROMPTFLOW_FLOW_INIT_CONFIG": init},
        )
        assert fp.traffic("flexy", blue=100).status_code == 200
        answer = fp.score("flexy", {"name": "Ada"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"text": "Welcome, Ada!", "init_types": ["str", "int"]}


@pytest.mark.parametrize("served", ["flex_chat"], indirect=True)
def test_a_chat_flex_flow_answers_the_openai_chat_route(served: ThreadedServer) -> None:
    body = {
        "model": "flow",
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "and now?"},
        ],
    }
    answer = httpx.post(f"{served.url}/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Echo after 1 turn(s): and now?"
    info = httpx.get(f"{served.url}/swagger.json").json()["info"]
    assert info["x-flow-type"] == "chat"
    assert (info["x-chat-input"], info["x-chat-output"]) == ("question", "answer")


def test_a_chat_flex_flow_registers_as_a_chat_model(tmp_path: Path) -> None:
    from flowport.control.models import snapshot_flow

    _, _, flow = snapshot_flow(FLOWS / "flex_chat", tmp_path / "home" / "models")
    assert flow.is_chat
    assert (flow.chat_input, flow.chat_history, flow.chat_output) == ("question", "chat_history", "answer")


def test_registering_a_flex_flow_checks_its_entry_imports(tmp_path: Path) -> None:
    from flowport.control.errors import ApiError
    from flowport.control.models import snapshot_flow

    folder = tmp_path / "src" / "broken"
    folder.mkdir(parents=True)
    (folder / "flow.flex.yaml").write_text("entry: app:run\n")
    (folder / "app.py").write_text("def other(x):\n    return x\n")
    models = tmp_path / "home" / "models"
    with pytest.raises(ApiError) as info:
        snapshot_flow(folder, models)
    assert info.value.status == 400
    assert "app has no function or class 'run'" in str(info.value)
    (folder / "app.py").write_text("def run(x:\n")
    with pytest.raises(ApiError, match="SyntaxError"):
        snapshot_flow(folder, models)


def test_an_async_generator_entry_streams_over_sse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FLOWS / "flex_async")
    server = ThreadedServer(ScoringApp(load_executor("steps:stream_numbers")), lifespan="on").start()
    try:
        events = httpx.post(
            f"{server.url}/score", json={"numbers": [1, 2]}, headers={"accept": "text/event-stream"}
        )
        assert events.text == 'data: {"output": "<2>"}\n\ndata: {"output": "<4>"}\n\n'
        assert httpx.post(f"{server.url}/score", json={"numbers": [5]}).json() == "<10>"
    finally:
        server.stop()


@pytest.mark.parametrize("served", ["flex_chat_stream"], indirect=True)
def test_a_generator_chat_flex_flow_streams_openai_chunks(served: ThreadedServer) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    body = {"model": "flow", "messages": [*messages, {"role": "user", "content": "hi"}], "stream": True}
    answer = httpx.post(f"{served.url}/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    chunks = [json.loads(x[6:]) for x in answer.text.split("\n\n") if x.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Echo 1: hi "
    assert answer.text.rstrip().endswith("data: [DONE]")
    whole = httpx.post(f"{served.url}/v1/chat/completions", json={**body, "stream": False}).json()
    assert whole["choices"][0]["message"]["content"] == "Echo 1: hi "


BROKEN_INIT = """\
class App:
    def __init__(self, n: int):
        raise ValueError("bad n")

    def __call__(self):
        return 1
"""


@pytest.mark.parametrize(
    ("yaml_text", "code", "args", "says"),
    [
        ("entry: not an entry\n", "", [], "flow.flex.yaml:1: 'entry' must be 'module:function'"),
        ("entry: missing_module:run\n", "", [], "no module 'missing_module' in"),
        (
            "entry: app:run\n",
            "def run(x: str):\n    return x\n",
            ["--node", "n"],
            "--node applies to DAG flows",
        ),
        (
            "entry: app:run\n",
            "def run(x: str):\n    return x\n",
            ["--variant", "${a.b}"],
            "a flex flow has no variants",
        ),
        (
            "entry: app:App\n",
            BROKEN_INIT,
            ["--init", '{"n": 1}'],
            "Failed to initialize flow entry 'app:App': (ValueError) bad n",
        ),
    ],
)
def test_flex_mistakes_are_one_clear_message(
    tmp_path: Path, yaml_text: str, code: str, args: list[str], says: str
) -> None:
    folder = tmp_path / "flow"
    folder.mkdir()
    (folder / "flow.flex.yaml").write_text(yaml_text)
    if code:
        (folder / "app.py").write_text(code)
    done = flowport("flow", "test", "--flow", str(folder), "--inputs", "x=1", *args, home=tmp_path)
    assert done.returncode == 1
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_init_is_refused_for_a_dag_flow(tmp_path: Path) -> None:
    done = flowport(
        "flow", "test", "--flow", str(FLOWS / "three_node_python"), "--init", "a=1", home=tmp_path
    )
    assert done.returncode == 1
    assert "--init applies to flex flows" in done.stderr


def test_a_flex_models_document_lists_the_entrys_inputs(tmp_path: Path) -> None:
    from flowport.control.models import flow_interface, snapshot_flow

    _, _, flow = snapshot_flow(FLOWS / "flex_function", tmp_path / "home" / "models")
    inputs = flow_interface(flow)["inputs"]
    assert list(inputs) == ["question", "count", "loud", "ratio", "tags"]
    assert inputs["question"]["type"] == "string"
    assert (inputs["count"]["type"], inputs["count"]["default"]) == ("int", 2)
    _, _, flow = snapshot_flow(FLOWS / "flex_class", tmp_path / "home" / "models")
    assert list(flow_interface(flow)["inputs"]) == ["name", "punctuation"]  # __call__'s, without self


async def test_a_fast_sync_entry_runs_on_the_loop_until_it_blocks(tmp_path: Path) -> None:
    (tmp_path / "flow.flex.yaml").write_text("entry: where_entry:where\n")
    (tmp_path / "where_entry.py").write_text(
        "import threading, time\n"
        "def where(delay: float = 0):\n"
        "    time.sleep(delay)\n"
        "    return {'thread': threading.current_thread().name}\n"
    )
    executor = load_executor(tmp_path)
    assert isinstance(executor, FlexExecutor)
    # generous thresholds: the test is about the policy, not the machine's speed under load
    executor.inline_policy = InlinePolicy(True, fast_seconds=1.0, proof_runs=3, demote_seconds=0.15)
    seen = [(await executor.run_line({})).outputs["thread"] for _ in range(5)]
    assert seen[0].startswith("flowport-flex")
    assert seen[-1] == "MainThread"
    slow = await executor.run_line({"delay": 0.3})
    assert slow.ok and slow.outputs == {"thread": "MainThread"}  # ran inline once, then demoted
    assert executor.inline_policy.demoted
    assert (await executor.run_line({})).outputs["thread"].startswith("flowport-flex")
    executor.close()


async def test_an_entry_records_the_same_on_the_loop_as_in_the_pool(tmp_path: Path) -> None:
    """Token usage, the node run's inputs and outputs, failures and streams: the same records
    whether the entry ran in a worker thread or inline (where its node run is made when read)."""
    (tmp_path / "flow.flex.yaml").write_text("entry: tokens:count\n")
    (tmp_path / "tokens.py").write_text(
        "import contextvars, threading\n"
        "from flowport.tools.usage import record_usage\n"
        "seen = contextvars.ContextVar('seen', default=0)\n"
        "def count(text: str, fail: bool = False, chunks: bool = False):\n"
        "    record_usage(3, 4)\n"
        "    seen.set(seen.get() + 1)  # stays in the line's own context\n"
        "    if fail:\n"
        "        raise ValueError('no')\n"
        "    if chunks:\n"
        "        return (chunk for chunk in [text, '!'])\n"
        "    return {'text': text, 'seen': seen.get(), 'thread': threading.current_thread().name}\n"
    )
    executor = load_executor(tmp_path)
    assert isinstance(executor, FlexExecutor)
    executor.inline_policy = InlinePolicy(True, fast_seconds=1.0, proof_runs=3, demote_seconds=1.0)
    results = [await executor.run_line({"text": f"t{i}"}, record_io=True) for i in range(5)]
    assert results[0].outputs["thread"].startswith("flowport-flex")
    assert results[-1].outputs["thread"] == "MainThread"
    for result in results:
        assert result.outputs["seen"] == 1
        node = result.run.node_runs["count"]
        assert node.status is Status.COMPLETED
        assert (node.started, node.ended) == (result.run.started, result.run.ended)
        assert node.inputs == {"text": result.inputs["text"], "fail": False, "chunks": False}
        assert node.output == result.outputs
        assert (node.usage.prompt_tokens, node.usage.completion_tokens) == (3, 4)
        assert result.run.usage.total_tokens == 7
        shape = result.run.to_dict()
        assert shape["usage"]["total_tokens"] == 7
        assert shape["node_runs"]["count"]["usage"]["total_tokens"] == 7
        assert shape["node_runs"]["count"]["status"] == "Completed"
    plain = await executor.run_line({"text": "x"})
    copied = pickle.loads(pickle.dumps(plain))  # records made when read travel as the others
    assert (copied.outputs, copied.node_outputs) == (plain.outputs, {"result": plain.outputs})
    assert copied.run.to_dict() == plain.run.to_dict()
    assert plain.run.node_runs["count"].inputs is None and plain.run.node_runs["count"].output is None
    streamed = await executor.run_line({"text": "x", "chunks": True}, stream=True)
    node = streamed.run.node_runs["count"]
    assert node.status is Status.RUNNING and node.usage.total_tokens == 7
    assert [chunk async for chunk in streamed.outputs["output"]] == ["x", "!"]
    assert node.status is Status.COMPLETED
    joined = await executor.run_line({"text": "x", "chunks": True})
    assert joined.outputs == {"output": "x!"} and joined.run.node_runs["count"].status is Status.COMPLETED
    failed = await executor.run_line({"text": "x", "fail": True})
    assert executor.inline_policy.demoted  # a failure on the loop ends the inline mode
    node = failed.run.node_runs["count"]
    assert (node.status, failed.run.status) == (Status.FAILED, Status.FAILED)
    assert node.error == failed.run.error and node.ended is not None
    assert node.usage.total_tokens == 7
    executor.close()


def test_planned_inputs_are_prepared_as_prepare_inputs_prepares_them() -> None:
    from flowport.engine.errors import ExecutionError
    from flowport.engine.inputs import input_plan, prepare_inputs, prepare_planned

    executor = load_executor(FLOWS / "flex_function")
    flow, plan = executor.flow, input_plan(executor.flow)
    lines: list[dict[str, object]] = [
        {"question": "q"}, {"question": "q", "count": 3}, {"question": "q", "count": "3"}, {"question": 7},
        {}, {"count": "x"}, {"question": "q", "count": "x"}, {"question": "q", "tags": '["a"]'},
        {"question": "q", "loud": "true", "ratio": 0.5, "extra": 1}, {"question": None},
    ]  # fmt: skip
    for given in lines:
        for line_number in (None, 4):
            try:
                expected: object = prepare_inputs(flow, given, line_number)
            except ExecutionError as exc:
                expected = exc.to_dict()
            try:
                got: object = prepare_planned(plan, flow, given, line_number)
            except ExecutionError as exc:
                got = exc.to_dict()
            assert got == expected, given
            if isinstance(got, dict) and "question" in given:
                assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]  # type: ignore[union-attr]
    executor.close()


def test_async_and_generator_entries_never_run_inline() -> None:
    for flow in ("flex_async", "flex_generator"):
        executor = load_executor(FLOWS / flow)
        assert isinstance(executor, FlexExecutor)
        assert executor.inline_policy.demoted, flow
        executor.close()
