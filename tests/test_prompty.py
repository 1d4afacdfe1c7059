"""Prompty files: what the recordings cannot cover (serving, the CLI, bad files, ``response: all``).

Outputs and requests compared with prompt flow itself are in tests/flows/prompty_*/cases.json
(replayed by test_prompt_flow_parity.py).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowport.connections import ConnectionResolver, ConnectionService
from flowport.engine import load_executor
from flowport.flow import FlowError
from flowport.serving import ScoringApp, ServeSettings
from flowport.testing.llm_server import LLMServer
from flowport.testing.threaded_server import ThreadedServer
from tests.conftest import FLOWS
from tests.test_cli import flowport
from tests.test_serve_process import start


@pytest.fixture
def served(request: pytest.FixtureRequest, openai_connection: ConnectionService) -> Iterator[ThreadedServer]:
    executor = load_executor(FLOWS / request.param, connections=ConnectionResolver(openai_connection))
    server = ThreadedServer(ScoringApp(executor, ServeSettings()), lifespan="on").start()
    yield server
    server.stop()


async def test_response_all_gives_the_whole_response(openai_connection: ConnectionService) -> None:
    executor = load_executor(
        FLOWS / "prompty_all" / "all.prompty", connections=ConnectionResolver(openai_connection)
    )
    try:
        result = await executor.run_line({"question": "Go"})
    finally:
        executor.close()
    assert result.error is None
    whole = result.outputs["output"]
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"]["content"] == "Echo: Go"
    assert whole["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("served", ["prompty_stream/stream.prompty"], indirect=True)
def test_a_streaming_prompty_streams_over_sse_and_joins_in_json(served: ThreadedServer) -> None:
    events = httpx.post(
        f"{served.url}/score", json={"question": "one two"}, headers={"accept": "text/event-stream"}
    )
    assert events.status_code == 200
    frames = [json.loads(x[len("data: ") :]) for x in events.text.split("\n\n") if x]
    assert "".join(f["output"] for f in frames) == "Echo: one two"
    assert len(frames) > 1
    assert httpx.post(f"{served.url}/score", json={"question": "hi"}).json() == "Echo: hi"


@pytest.mark.parametrize("served", ["prompty_chat/json.prompty"], indirect=True)
def test_a_json_prompty_serves_its_object_and_refuses_missing_inputs(served: ThreadedServer) -> None:
    assert httpx.post(f"{served.url}/score", json={"question": "q"}).json() == {"echo": "q"}
    missing = httpx.post(f"{served.url}/score", json={})
    assert missing.status_code == 400
    assert (
        missing.json()["error"]["message"]
        == "Required input fields ['question'] are missing in request data {}"
    )
    swagger = httpx.get(f"{served.url}/swagger.json").json()
    assert "question" in json.dumps(swagger)


def test_flow_test_and_validate_a_prompty(tmp_path: Path, llm_server: LLMServer) -> None:
    env = {"PROMPTY_TEST_KEY": "test-key", "PROMPTY_TEST_BASE_URL": llm_server.base_url}
    file = str(FLOWS / "prompty_env" / "env.prompty")
    done = flowport(
        "flow", "test", "--flow", file, "--inputs", "question=From the CLI", home=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"output": "Echo: From the CLI"}
    valid = flowport("flow", "validate", "--flow", file, home=tmp_path, env=env)
    assert valid.returncode == 0, valid.stderr
    report = json.loads(valid.stdout)
    assert (report["inputs"], report["entry"]) == (["question"], "env.prompty:__call__")
    unset = flowport("flow", "test", "--flow", file, "--inputs", "question=x", home=tmp_path)
    assert unset.returncode == 1
    assert "reads ${env:PROMPTY_TEST_KEY}, but PROMPTY_TEST_KEY is not set" in unset.stderr
    assert "Traceback" not in unset.stderr


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: x\nuser: hi\n", "starts with YAML front matter between two '---' lines"),
        (
            "---\nmodel:\n  api: embed\n---\nuser: hi\n",
            "model.api is 'embed'; expected 'chat' or 'completion'",
        ),
        (
            "---\nmodel:\n  configuration: {type: openai, model: m, connection: nope}\n---\nuser:\nhi\n",
            "model.configuration.connection names 'nope', which does not exist",
        ),
        (
            "---\nmodel:\n  configuration: {type: openai, model: m}\n"
            "  parameters:\n    tools: ${file:no.json}\n---\n",
            "does not exist",
        ),
        (
            "---\nmodel:\n  configuration: {type: openai, model: m}\ninputs:\n  q: {type: decimal}\n---\n",
            "input 'q' has type 'decimal'",
        ),
        (
            "---\nname: x\n---\nuser: hi\n",
            "model.configuration.type is missing; give 'openai' or 'azure_openai'",
        ),
    ],
)
def test_a_bad_prompty_is_named_in_one_line(tmp_path: Path, text: str, says: str) -> None:
    file = tmp_path / "bad.prompty"
    file.write_text(text)
    with pytest.raises(FlowError) as info:
        load_executor(file)
    assert says in str(info.value)


def test_flow_serve_serves_a_prompty_with_a_connection(
    home: Path, openai_connection: ConnectionService
) -> None:
    process, url = start(FLOWS / "prompty_stream" / "stream.prompty", home)
    try:
        answer = httpx.post(f"{url}/score", json={"question": "served"}, timeout=10)
        assert answer.json() == "Echo: served"
        events = httpx.post(
            f"{url}/score", json={"question": "a b"}, headers={"accept": "text/event-stream"}, timeout=10
        )
        assert events.headers["content-type"].startswith("text/event-stream")
        frames = [json.loads(x[len("data: ") :]) for x in events.text.split("\n\n") if x]
        assert "".join(f["output"] for f in frames) == "Echo: a b"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) in (0, -signal.SIGTERM)


async def test_a_failing_model_call_is_retried_then_named(openai_connection: ConnectionService) -> None:
    executor = load_executor(
        FLOWS / "prompty_chat" / "chat.prompty", connections=ConnectionResolver(openai_connection)
    )
    try:
        flaky = await executor.run_line({"question": "again [[flaky:503:1]] [[retry-after:0]]"})
        assert flaky.error is None
        assert flaky.outputs == {"output": "Echo: again [[flaky:503:1]] [[retry-after:0]]"}
        refused = await executor.run_line({"question": "no [[status:401]]"})
    finally:
        executor.close()
    assert refused.error is not None
    assert refused.error.message.startswith("Execution failure in 'Chat prompty': (LLMCallError)")


def test_a_prompty_folder_registers_and_deploys_as_an_endpoint(
    home: Path, openai_connection: ConnectionService
) -> None:
    from flowport.control.models import flow_interface, snapshot_flow
    from tests.endpoint_harness import Flowport

    snapshot, _, flow = snapshot_flow(FLOWS / "prompty_stream", home / "models")
    assert (snapshot / "stream.prompty").is_file()
    assert flow_interface(flow)["entry"] == "stream.prompty"
    assert list(flow.inputs) == ["question"]
    assert "open_ai_connection" in flow.connection_candidates()
    with Flowport(home) as fp:
        fp.endpoint("prompty")
        fp.deploy("prompty", "blue", model={"path": str(FLOWS / "prompty_stream")})
        assert fp.traffic("prompty", blue=100).status_code == 200
        answer = fp.score("prompty", {"question": "deployed"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == "Echo: deployed"


@pytest.mark.parametrize("served", ["prompty_chat_history/chat.prompty"], indirect=True)
def test_a_chat_prompty_answers_openai_chat_completions_with_its_history(
    served: ThreadedServer, llm_server: LLMServer
) -> None:
    messages = [
        {"role": "system", "content": "ignored: the prompty has its own"},
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "Echo: First"},
        {"role": "user", "content": "Second"},
        {"role": "assistant", "content": "Echo: Second"},
        {"role": "user", "content": "Third?"},
    ]
    httpx.delete(f"{llm_server.url}/_requests")
    answer = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": messages})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"] == {"role": "assistant", "content": "Echo: Third?"}
    # The prompty got the history as OpenAI messages: what pf flow test sent for the same inputs.
    [sent] = httpx.get(f"{llm_server.url}/_requests").json()
    recorded = json.loads((FLOWS / "prompty_chat_history" / "cases.json").read_text())[1]
    assert sent["body"] == recorded["llm_requests"][0]["body"]

    chunks = httpx.post(
        f"{served.url}/v1/chat/completions", json={"messages": messages[-1:], "stream": True}
    ).text.split("\n\n")
    deltas = [json.loads(c[len("data: ") :])["choices"][0]["delta"] for c in chunks if c[6:7] == "{"]
    assert "".join(d.get("content", "") for d in deltas) == "Echo: Third?"
    assert chunks[-2] == "data: [DONE]"
    swagger = httpx.get(f"{served.url}/swagger.json").json()
    assert swagger["info"]["x-flow-type"] == "chat"
    assert (swagger["info"]["x-chat-input"], swagger["info"]["x-chat-history"]) == (
        "question",
        "chat_history",
    )


@pytest.mark.parametrize("served", ["prompty_chat_history/marked.prompty"], indirect=True)
def test_a_marked_chat_prompty_takes_its_other_inputs_from_the_request(
    served: ThreadedServer, llm_server: LLMServer
) -> None:
    messages = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Echo: Hello"},
        {"role": "user", "content": "Well?"},
    ]
    httpx.delete(f"{llm_server.url}/_requests")
    answer = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": messages, "tone": "warm"})
    assert answer.json()["choices"][0]["message"]["content"] == "Echo: Well?"
    [sent] = httpx.get(f"{llm_server.url}/_requests").json()
    recorded = json.loads((FLOWS / "prompty_chat_history" / "cases.json").read_text())[2]
    assert sent["body"] == recorded["llm_requests"][0]["body"]


@pytest.mark.parametrize("served", ["prompty_chat/chat.prompty"], indirect=True)
def test_a_prompty_without_a_chat_history_is_not_a_chat_flow(served: ThreadedServer) -> None:
    refused = httpx.post(
        f"{served.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "not_a_chat_flow"


def test_a_deployed_chat_prompty_answers_the_openai_route_through_the_gateway(
    home: Path, openai_connection: ConnectionService, tmp_path: Path
) -> None:
    from tests.endpoint_harness import Flowport

    folder = tmp_path / "chat_prompty"
    folder.mkdir()
    (folder / "chat.prompty").write_bytes((FLOWS / "prompty_chat_history" / "chat.prompty").read_bytes())
    with Flowport(home) as fp:
        model = fp.ok("POST", "/models", json={"spec": {"name": "chatty", "path": str(folder)}})
        assert model["flow"]["chat_history_format"] == "messages"
        assert model["properties"]["azureml.promptflow.chat_output"] == "output"
        fp.endpoint("chatty")
        fp.deploy("chatty", "blue", model="azureml:chatty:1")
        assert fp.traffic("chatty", blue=100).status_code == 200
        messages = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Echo: Hi"},
            {"role": "user", "content": "And now?"},
        ]
        answer = fp.http.post(
            f"{fp.url}/endpoints/chatty/v1/chat/completions",
            json={"messages": messages},
            headers={"authorization": f"Bearer {fp.key('chatty')}"},
        )
        assert answer.status_code == 200, answer.text
        recorded = json.loads((FLOWS / "prompty_chat_history" / "cases.json").read_text())[0]
        assert answer.json()["choices"][0]["message"]["content"] == recorded["expected"]["output"]
