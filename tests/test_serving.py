"""The scoring app over real HTTP: uvicorn on loopback, httpx and the openai SDK as clients."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from openai import APIError, OpenAI

from flowport.connections import OpenAIConnection
from flowport.engine import FlowExecutor
from flowport.serving import ScoringApp, ServeSettings, SettingsError
from flowport.testing.llm_server import LLMServer
from flowport.testing.threaded_server import ThreadedServer
from tests.conftest import FLOWS, free_port

SERVING_FLOWS = Path(__file__).parent / "serving_flows"

Serve = Callable[..., ThreadedServer]


@pytest.fixture
def serve(llm_server: LLMServer) -> Iterator[Serve]:
    """Start a scoring app for a flow folder; stopped after the test."""
    running: list[ThreadedServer] = []

    def start(flow: Path, base_url: str | None = None, **settings: object) -> ThreadedServer:
        """``base_url``: where the flow's LLM connection points (the test LLM server by default)."""
        base = base_url or llm_server.base_url
        connection = OpenAIConnection(name="open_ai_connection", api_key="k", base_url=base)
        executor = FlowExecutor.load(flow, connections={"open_ai_connection": connection})
        app = ScoringApp(executor, ServeSettings(**settings))  # type: ignore[arg-type]
        server = ThreadedServer(app, lifespan="on").start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def test_score_answers_outputs_as_json_with_request_ids(serve: Serve) -> None:
    server = serve(FLOWS / "three_node_python")
    response = httpx.post(f"{server.url}/score", json={"text": "a b c", "ignored": 1})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"result": "A B C (3 words)"}
    assert len(response.headers["x-request-id"]) == 36
    defaults = httpx.post(f"{server.url}/score", json={})
    assert defaults.json() == {"result": "HELLO WORLD FROM FLOWPORT (4 words)"}
    echoed = httpx.post(
        f"{server.url}/score",
        json={},
        headers={"x-request-id": "req-1", "x-ms-client-request-id": "client_42-x"},
    )
    assert echoed.headers["x-request-id"] == "req-1"
    assert echoed.headers["x-ms-client-request-id"] == "client_42-x"
    invalid = httpx.post(f"{server.url}/score", json={}, headers={"x-ms-client-request-id": "no spaces!"})
    assert "x-ms-client-request-id" not in invalid.headers
    for bad in (b"r" * 129, "caf\u00e9".encode("latin-1"), b"two words", b"tab\tinside"):
        replaced = httpx.post(f"{server.url}/score", json={}, headers={"x-request-id": bad})
        assert replaced.status_code == 200
        assert uuid.UUID(replaced.headers["x-request-id"]).version == 4
    longest = httpx.post(f"{server.url}/score", json={}, headers={"x-request-id": "r" * 128})
    assert longest.headers["x-request-id"] == "r" * 128


def test_browser_requests_get_cors_headers_and_the_same_answer(serve: Serve) -> None:
    server = serve(FLOWS / "three_node_python")
    plain = httpx.post(f"{server.url}/score", json={"text": "a b"})
    assert "access-control-allow-origin" not in plain.headers
    browser = httpx.post(
        f"{server.url}/score", json={"text": "a b"}, headers={"origin": "http://studio.test"}
    )
    assert browser.headers["access-control-allow-origin"] == "*"
    assert browser.json() == plain.json() == {"result": "A B (2 words)"}
    preflight = httpx.options(
        f"{server.url}/score",
        headers={"origin": "http://studio.test", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
    assert httpx.get(f"{server.url}/score").status_code == 405


def test_non_json_bodies(serve: Serve) -> None:
    one_input = serve(SERVING_FLOWS / "echo_one")
    text = httpx.post(f"{one_input.url}/score", content="just text", headers={"content-type": "text/plain"})
    assert text.status_code == 200 and text.json() == {"echoed": "just text"}
    several = serve(FLOWS / "aggregation")
    broken = httpx.post(f"{several.url}/score", content="{not json")
    assert broken.status_code == 400
    assert broken.json() == {
        "error": {
            "code": "UserError",
            "message": "Promptflow executor received non json data, but there's more than 1 input fields, "
            "please use json request data instead.",
        }
    }
    array = httpx.post(f"{several.url}/score", json=[1, 2])
    assert array.status_code == 400 and "JSON object" in array.json()["error"]["message"]
    bad_utf8 = httpx.post(f"{one_input.url}/score", content=b"\xff\xfe\xfa")
    assert bad_utf8.status_code == 400
    deep = httpx.post(f"{several.url}/score", content="[" * 5000 + "]" * 5000)
    assert deep.status_code == 400


def test_accept_header_negotiation(serve: Serve) -> None:
    server = serve(FLOWS / "three_node_python")
    for accept in ("application/json", "*/*", "application/json; charset=utf-8"):
        assert httpx.post(f"{server.url}/score", json={}, headers={"accept": accept}).status_code == 200
    refused = httpx.post(f"{server.url}/score", json={}, headers={"accept": "text/plain"})
    assert refused.status_code == 406
    assert refused.json() == {
        "error": {
            "code": "UserError",
            "message": "Media type text/plain in Accept header is not acceptable. "
            "Supported media type(s) - application/json",
        }
    }


def test_server_sent_events_frame_by_frame(serve: Serve) -> None:
    server = serve(SERVING_FLOWS / "stream_chat")
    with httpx.stream(
        "POST",
        f"{server.url}/score",
        json={"question": "one two three", "chat_history": [{"inputs": {}, "outputs": {}}]},
        headers={"accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = b"".join(response.iter_bytes())
    assert body == (
        b'data: {"turns": 1}\n\n'
        b'data: {"answer": "one"}\n\n'
        b'data: {"answer": " two"}\n\n'
        b'data: {"answer": " three"}\n\n'
    )
    joined = httpx.post(f"{server.url}/score", json={"question": "one two", "style": "loud"})
    assert joined.json() == {"answer": "ONE TWO", "turns": 0}


def test_llm_answer_streams_as_the_model_sends_it(serve: Serve) -> None:
    server = serve(FLOWS / "chat_llm")
    with httpx.stream(
        "POST", f"{server.url}/score", json={"question": "hi there"}, headers={"accept": "text/event-stream"}
    ) as response:
        frames = [line for line in response.iter_lines() if line]
    chunks = [json.loads(f.removeprefix("data: "))["answer"] for f in frames]
    assert chunks == ["", "Echo: ", "hi ", "there", ""]  # no plain outputs: no first frame


def test_user_and_tool_errors(serve: Serve) -> None:
    server = serve(FLOWS / "tool_error")
    failed = httpx.post(f"{server.url}/score", json={"text": "bad"})
    assert failed.status_code == 400
    assert failed.json() == {
        "error": {"code": "UserError", "message": "Execution failure in 'check': (ValueError) bad value"}
    }
    assert failed.headers["x-request-id"]
    typed = serve(FLOWS / "chat_llm")
    wrong = httpx.post(f"{typed.url}/score", json={"question": "q", "chat_history": "notalist"})
    assert wrong.status_code == 400
    message = wrong.json()["error"]["message"]
    assert "'chat_history'" in message and "'list'" in message


def test_request_timeout_cancels_with_408(serve: Serve) -> None:
    server = serve(SERVING_FLOWS / "slow", request_timeout_ms=200)
    response = httpx.post(f"{server.url}/score", json={"seconds": 5}, timeout=10)
    assert response.status_code == 408
    assert "200 ms" in response.json()["error"]["message"]
    assert httpx.post(f"{server.url}/score", json={"seconds": 0}).status_code == 200


async def test_over_the_concurrency_limit_is_429_with_retry_after(serve: Serve) -> None:
    server = serve(SERVING_FLOWS / "slow", max_concurrent_requests=1, max_queue_wait_ms=50)
    async with httpx.AsyncClient(timeout=10) as client:
        slow = asyncio.create_task(client.post(f"{server.url}/score", json={"seconds": 1}))
        await asyncio.sleep(0.3)
        refused = await client.post(f"{server.url}/score", json={"seconds": 0})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert (await slow).status_code == 200
        assert (await client.post(f"{server.url}/score", json={"seconds": 0})).status_code == 200


def test_body_limit_is_413(serve: Serve) -> None:
    server = serve(FLOWS / "three_node_python", max_body_bytes=100)
    response = httpx.post(f"{server.url}/score", json={"text": "x" * 200})
    assert response.status_code == 413
    assert httpx.post(f"{server.url}/score", json={"text": "ok"}).status_code == 200


def test_included_fields_and_evaluation_only_outputs(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = serve(SERVING_FLOWS / "slow")
    assert httpx.post(f"{slow.url}/score", json={}).json() == {"slept": 0.0}
    monkeypatch.setenv("PROMPTFLOW_RESPONSE_INCLUDED_FIELDS", '["answer"]')
    settings = ServeSettings.from_env()
    assert settings.response_included_fields == ("answer",)
    chat = serve(SERVING_FLOWS / "stream_chat", response_included_fields=("answer",))
    assert httpx.post(f"{chat.url}/score", json={"question": "a b"}).json() == {"answer": "a b"}
    monkeypatch.setenv("PROMPTFLOW_RESPONSE_INCLUDED_FIELDS", "answer")
    with pytest.raises(SettingsError, match="JSON list"):
        ServeSettings.from_env()


def test_health_ready_version_swagger_and_feedback(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(FLOWS / "chat_llm")
    assert httpx.get(f"{server.url}/health").json()["status"] == "Healthy"
    assert httpx.get(f"{server.url}/ready").json()["status"] == "Ready"
    assert httpx.get(f"{server.url}/version").json() == {
        "status": "Healthy",
        "build_info": "",
        "version": "0.1.0",
    }
    swagger = httpx.get(f"{server.url}/swagger.json").json()
    assert swagger["openapi"] == "3.0.0"
    info = swagger["info"]
    assert (info["x-flow-name"], info["x-flow-type"], info["x-chat-input"], info["x-chat-output"]) == (
        "chat_llm",
        "chat",
        "question",
        "answer",
    )
    assert info["x-chat-history"] == "chat_history"
    schema = swagger["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    # prompt flow's shape: a default only when truthy, every input listed as required
    assert schema["properties"]["chat_history"] == {
        "type": "array",
        "items": {"type": "object", "additionalProperties": {}},
    }
    assert schema["required"] == ["chat_history", "question"]
    assert swagger["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    feedback = httpx.post(f"{server.url}/feedback", json={"rating": 5}, headers={"x-request-id": "fb-1"})
    assert feedback.status_code == 200
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {"event": "feedback", "request_id": "fb-1", "feedback": {"rating": 5}}.items() <= logged[
        -1
    ].items()


def test_metrics_count_requests_latency_tokens_and_errors(serve: Serve) -> None:
    server = serve(FLOWS / "chat_llm")
    assert httpx.post(f"{server.url}/score", json={"question": "count my tokens"}).status_code == 200
    httpx.post(f"{server.url}/score", json={"question": "q", "chat_history": "bad"})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'flowport_requests_total{route="score",status="200"} 1.0' in text
    assert 'flowport_requests_total{route="score",status="400"} 1.0' in text
    assert (
        'flowport_llm_tokens_total{connection="open_ai_connection",model="test-model",type="completion"} 4.0'
        in text
    )
    assert 'flowport_node_seconds_count{node="chat"} 1.0' in text
    assert 'flowport_request_seconds_count{phase="last",route="score"} 2.0' in text


def test_metrics_count_the_tokens_of_package_llm_tools(serve: Serve, tmp_path: Path) -> None:
    (tmp_path / "chat.jinja2").write_text("# user:\n{{question}}\n")
    (tmp_path / "flow.dag.yaml").write_text(
        "inputs: {question: {type: string}}\n"
        "outputs: {answer: {type: string, reference: '${chat.output}'}}\n"
        "nodes:\n- name: chat\n  type: custom_llm\n"
        "  source: {type: package_with_prompt, tool: promptflow.tools.llm.llm, path: chat.jinja2}\n"
        "  inputs: {connection: open_ai_connection, api: chat, model: m, question: '${inputs.question}'}\n"
    )
    server = serve(tmp_path)
    answer = httpx.post(f"{server.url}/score", json={"question": "count my tokens"})
    assert answer.json() == {"answer": "Echo: count my tokens"}
    text = httpx.get(f"{server.url}/metrics").text
    assert (
        'flowport_llm_tokens_total{connection="open_ai_connection",model="m",type="completion"} 4.0' in text
    )


def test_access_log_is_one_json_line_per_request(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(FLOWS / "three_node_python")
    httpx.post(f"{server.url}/score", json={"text": "secret words"}, headers={"x-request-id": "log-1"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [record] = [r for r in lines if r.get("request_id") == "log-1"]
    assert record["status"] == 200 and record["route"] == "score" and record["duration_ms"] > 0
    assert "secret" not in json.dumps(lines)


def test_openai_compatible_chat_route(serve: Serve) -> None:
    server = serve(SERVING_FLOWS / "stream_chat")
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model="my-flow",
        messages=[
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "what now"},
        ],
    )
    assert completion.choices[0].message.content == "what now"
    assert completion.model == "my-flow"
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a b c"}], stream=True, extra_body={"style": "loud"}
    )
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices[0].delta.content]
    assert pieces == ["A", " B", " C"]
    bad = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_chat_completions_on_a_standard_flow_is_an_openai_error(serve: Serve) -> None:
    plain = serve(FLOWS / "three_node_python")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=plain.url) as client:
        refused = client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/json"
        error = refused.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            None,
            "not_a_chat_flow",
        )
        assert "'three_node_python' is not a chat flow" in error["message"]
        assert "is_chat_input: true" in error["message"] and "/score" in error["message"]
        assert "127.0.0.1" not in error["message"] and "localhost" not in error["message"]
        assert client.post("/score", json={"text": "a"}).status_code == 200  # same connection, still fine
    sdk = OpenAI(base_url=f"{plain.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(Exception, match="not a chat flow") as raised:
        sdk.chat.completions.create(**body)  # type: ignore[call-overload]
    assert type(raised.value).__name__ == "BadRequestError"


def test_swagger_takes_the_name_it_is_given() -> None:
    executor = FlowExecutor.load(FLOWS / "three_node_python")
    try:
        app = ScoringApp(executor, ServeSettings(), name="word-counter")
        info = json.loads(app.swagger)["info"]
        assert (info["title"], info["x-flow-name"]) == ("Promptflow[word-counter] API", "word-counter")
        default = json.loads(ScoringApp(executor, ServeSettings()).swagger)["info"]
        assert default["title"] == "Promptflow[three_node_python] API"
    finally:
        executor.close()


def test_history_maps_to_chat_history_pairs(serve: Serve) -> None:
    server = serve(SERVING_FLOWS / "stream_chat")
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "messages": [
                {"role": "user", "content": "1"},
                {"role": "assistant", "content": "one"},
                {"role": "user", "content": "2"},
                {"role": "assistant", "content": "two"},
                {"role": "user", "content": "3"},
            ]
        },
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "3"


# -- LLM failures as answers --------------------------------------------------------------------


def test_an_unreachable_llm_is_a_clear_error_not_a_timeout(serve: Serve) -> None:
    port = free_port()
    server = serve(FLOWS / "chat_llm", base_url=f"http://127.0.0.1:{port}/v1", request_timeout_ms=300_000)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    expected = (
        f"LLM node 'chat': cannot reach {url} for connection 'open_ai_connection': connection refused. "
        "Check the connection's base_url."
    )
    answer = httpx.post(f"{server.url}/score", json={"question": "hi"}, timeout=60)
    assert answer.status_code == 400  # the connection error, not 408 after the request timeout
    assert answer.json() == {"error": {"code": "UserError", "message": expected}}
    events = httpx.post(
        f"{server.url}/score", json={"question": "hi"}, headers={"accept": "text/event-stream"}, timeout=60
    )
    assert events.status_code == 400 and events.json()["error"]["message"] == expected
    chat = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert chat.status_code == 400 and chat.json()["error"]["message"] == expected


def test_a_stream_cut_midway_ends_with_an_error_event(serve: Serve, llm_server: LLMServer) -> None:
    server = serve(FLOWS / "chat_llm")
    with httpx.stream(
        "POST",
        f"{server.url}/score",
        json={"question": "one two three [[cut:3]]"},
        headers={"accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        body = response.read().decode()
    frames = body.split("\n\n")
    assert frames[:3] == ['data: {"answer": ""}', 'data: {"answer": "Echo: "}', 'data: {"answer": "one "}']
    assert frames[3].startswith("event: error\ndata: ")
    assert json.loads(frames[3].split("\n", 1)[1].removeprefix("data: ")) == {
        "error": {
            "code": "UserError",
            "message": f"LLM node 'chat': the streamed answer from {llm_server.base_url}/chat/completions "
            "for connection 'open_ai_connection' broke off after 3 chunks: the server closed the connection "
            "in the middle of its answer.",
        }
    }
    assert frames[4:] == [""]  # the error frame is the last
    whole = httpx.post(f"{server.url}/score", json={"question": "one two three [[cut:1]]"})
    assert whole.status_code == 400
    assert whole.json()["error"]["message"].endswith(
        "the server closed the connection in the middle of its answer."
    )


def test_a_cut_chat_completions_stream_ends_with_an_openai_error_chunk(serve: Serve) -> None:
    server = serve(FLOWS / "chat_llm")
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "one two three [[cut:3]]"}], stream=True
    )
    pieces: list[str] = []
    with pytest.raises(APIError, match="broke off after 3 chunks") as raised:
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "Echo: one "
    assert raised.value.body == {
        "message": raised.value.message,
        "type": "invalid_request_error",
        "param": None,
        "code": "OpenAIError",
    }
