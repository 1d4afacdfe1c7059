"""LLM nodes against the project's OpenAI-compatible test server (real HTTP, no mocks)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest

from flowport.connections import AzureOpenAIConnection, OpenAIConnection
from flowport.engine import ExecutionError, FlowExecutor, NodeStream
from flowport.testing.llm_server import LLMServer
from flowport.tools.chat_parser import ChatFormatError, parse_chat
from tests.conftest import free_port
from tests.test_flow_definition import write_flow

CHAT_TEMPLATE = """\
# system:
You answer briefly.

{% for item in chat_history %}
# user:
{{ item.inputs.question }}
# assistant:
{{ item.outputs.answer }}
{% endfor %}
# user:
{{ question }}
"""

CHAT_FLOW = """\
inputs:
  question: {type: string, is_chat_input: true}
  chat_history: {type: list, default: [], is_chat_history: true}
outputs:
  answer: {type: string, reference: "${chat.output}", is_chat_output: true}
nodes:
- name: chat
  type: llm
  source: {type: code, path: chat.jinja2}
  connection: llm
  api: chat
  inputs:
    model: gpt-test
    temperature: "0.2"
    max_tokens: 50
    stop: ["STOP"]
    seed: 7
    response_format: {"type": "text"}
    question: ${inputs.question}
    chat_history: ${inputs.chat_history}
"""


@pytest.fixture
def chat_flow(tmp_path, llm_server: LLMServer):
    folder = write_flow(tmp_path / "chat", CHAT_FLOW, {"chat.jinja2": CHAT_TEMPLATE})
    connection = OpenAIConnection(name="llm", api_key="k", base_url=llm_server.base_url)
    executor = FlowExecutor.load(folder, connections={"llm": connection})
    yield executor
    executor.close()


def recorded_requests(server: LLMServer) -> list[dict]:
    return httpx.get(f"{server.url}/_requests").json()


async def test_chat_node_renders_history_and_passes_parameters(chat_flow, llm_server: LLMServer) -> None:
    httpx.delete(f"{llm_server.url}/_requests")
    history = [{"inputs": {"question": "hi"}, "outputs": {"answer": "hello"}}]
    result = await chat_flow.run_line({"question": "what is up", "chat_history": history})
    assert result.error is None
    assert result.outputs == {"answer": "Echo: what is up"}
    [request] = recorded_requests(llm_server)
    body = request["body"]
    assert body["messages"] == [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "what is up"},
    ]
    assert body["model"] == "gpt-test"
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 50
    assert body["stop"] == ["STOP"]
    assert body["seed"] == 7
    assert body["response_format"] == {"type": "text"}
    usage = result.run.node_runs["chat"].usage
    assert usage.completion_tokens == 4  # "Echo: what is up"
    assert usage.prompt_tokens > 0
    assert result.run.usage.total_tokens == usage.total_tokens


async def test_chat_node_streams_when_its_output_is_streamed(chat_flow) -> None:
    result = await chat_flow.run_line({"question": "one two three"}, stream=True)
    stream = result.outputs["answer"]
    assert isinstance(stream, NodeStream)
    chunks = [chunk async for chunk in stream]
    assert chunks == ["", "Echo: ", "one ", "two ", "three", ""]  # empty first and last, as prompt flow
    node = result.run.node_runs["chat"]
    assert node.output == "Echo: one two three"
    assert node.usage.completion_tokens == 4


async def test_completion_api_with_azure_connection(tmp_path, llm_server: LLMServer) -> None:
    folder = write_flow(
        tmp_path / "complete",
        """\
        inputs:
          text: {type: string}
        outputs:
          out: {reference: "${complete.output}"}
        nodes:
        - name: complete
          type: llm
          source: {type: code, path: prompt.jinja2}
          connection: azure
          api: completion
          inputs:
            deployment_name: my-deployment
            max_tokens: 3
            text: ${inputs.text}
        """,
        {"prompt.jinja2": "Say {{ text }}"},
    )
    azure = AzureOpenAIConnection(
        name="azure", api_key="k", api_base=llm_server.url, api_version="2024-02-01"
    )
    httpx.delete(f"{llm_server.url}/_requests")
    executor = FlowExecutor.load(folder, connections={"azure": azure})
    result = await executor.run_line({"text": "a b c d"})
    assert result.outputs == {"out": "Echo: Say a"}
    [request] = recorded_requests(llm_server)
    assert request["path"] == "/openai/deployments/my-deployment/completions"
    assert request["body"]["prompt"] == "Say a b c d"


async def test_llm_errors_are_user_errors_naming_the_node(chat_flow) -> None:
    result = await chat_flow.run_line({"question": "fail [[status:400]]"})
    assert result.error is not None
    error = result.error.to_dict()
    assert error["code"] == "UserError"
    assert error["innerError"]["code"] == "OpenAIError"
    assert error["message"].startswith(
        "OpenAI API hits BadRequestError: Error code: 400 - triggered error 400"
    )


async def test_template_without_roles_is_a_clear_error(tmp_path, llm_server: LLMServer) -> None:
    folder = write_flow(
        tmp_path / "bad",
        """\
        outputs:
          out: {reference: "${chat.output}"}
        nodes:
        - name: chat
          type: llm
          source: {type: code, path: chat.jinja2}
          connection: llm
          api: chat
          inputs: {model: m}
        """,
        {"chat.jinja2": "Just text, no role line."},
    )
    connection = OpenAIConnection(name="llm", api_key="k", base_url=llm_server.base_url)
    result = await FlowExecutor.load(folder, connections={"llm": connection}).run_line({})
    assert result.error is not None
    assert result.error.inner_code == "ChatAPIInvalidFormat"
    assert "role line" in result.error.message


def test_chat_parser_follows_prompt_flow_markers() -> None:
    prompt = "# system:\nBe nice.\n\nuser:\n  hi  \n\n# Assistant:\nhello\n## user:\nnot a marker\n"
    assert parse_chat(prompt) == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello\n## user:\nnot a marker"},
    ]
    assert parse_chat("system:\nx\nfunction:\n## name:\nget_weather\n## content:\n{}\n")[1] == {
        "role": "function",
        "name": "get_weather",
        "content": "{}",
    }
    with pytest.raises(ChatFormatError):
        parse_chat("no roles here")


# -- failures: fail fast when the API cannot be reached, bounded retries, cut streams --------------


def load_chat(tmp_path, base_url: str, **kw) -> FlowExecutor:
    folder = write_flow(tmp_path / "chat", CHAT_FLOW, {"chat.jinja2": CHAT_TEMPLATE})
    connection = OpenAIConnection(name="llm", api_key="k", base_url=base_url)
    return FlowExecutor.load(folder, connections={"llm": connection}, **kw)


async def failure(executor: FlowExecutor, question: str) -> str:
    try:
        result = await executor.run_line({"question": question})
    finally:
        executor.close()
    assert result.error is not None
    error = result.error.to_dict()
    assert (error["code"], error["innerError"]["code"]) == ("UserError", "OpenAIError")
    return error["message"]


async def test_a_refused_connection_fails_at_once_naming_node_connection_and_url(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # bound, then closed: nothing listens there
    message = await failure(load_chat(tmp_path, f"http://127.0.0.1:{port}/v1"), "hi")
    assert message == (
        f"LLM node 'chat': cannot reach http://127.0.0.1:{port}/v1/chat/completions for connection 'llm': "
        "connection refused. Check the connection's base_url."
    )
    assert not [r for r in caplog.records if r.name == "flowport.llm"]  # not retried


async def test_an_unknown_host_fails_at_once(tmp_path) -> None:
    message = await failure(load_chat(tmp_path, "http://llm.invalid/v1"), "hi")
    assert message.startswith(
        "LLM node 'chat': cannot reach http://llm.invalid/v1/chat/completions for connection 'llm': "
        "cannot resolve host 'llm.invalid'"
    )
    assert message.endswith("Check the connection's base_url.")


async def test_an_untrusted_certificate_fails_at_once(tmp_path, certificate: tuple[str, str]) -> None:
    with LLMServer(tls=certificate) as https_llm:
        message = await failure(load_chat(tmp_path, https_llm.base_url), "hi")
    assert message == (
        f"LLM node 'chat': cannot reach {https_llm.base_url}/chat/completions for connection 'llm': "
        "TLS certificate not trusted: self-signed certificate. Check the connection's base_url and that "
        "its server's certificate is trusted (SSL_CERT_FILE, SSL_CERT_DIR)."
    )


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flowport.llm"]


async def test_rate_limits_are_retried_with_retry_after_and_each_retry_is_logged(
    tmp_path, llm_server: LLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    question = f"busy {uuid.uuid4().hex} [[flaky:429:2]]"
    executor = load_chat(tmp_path, llm_server.base_url)
    try:
        result = await executor.run_line({"question": question})
    finally:
        executor.close()
    assert result.error is None and result.outputs["answer"] == f"Echo: {question}"
    assert retry_lines(caplog) == [
        f"LLM node 'chat' (connection 'llm'): RateLimitError: Error code: 429 - triggered error 429; "
        f"attempt {n}/5 failed, retrying in 0 s"
        for n in (1, 2)
    ]


async def test_server_errors_back_off_when_no_retry_after_is_given(
    tmp_path, llm_server: LLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    question = f"down {uuid.uuid4().hex} [[flaky:503:1]]"
    executor = load_chat(tmp_path, llm_server.base_url)
    try:
        result = await executor.run_line({"question": question})
    finally:
        executor.close()
    assert result.error is None
    assert retry_lines(caplog) == [
        "LLM node 'chat' (connection 'llm'): InternalServerError: Error code: 503 - triggered error 503; "
        "attempt 1/5 failed, retrying in 1 s"
    ]


async def test_retries_are_bounded(tmp_path, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPORT_LLM_MAX_RETRIES", "2")
    question = f"always {uuid.uuid4().hex} [[status:500]] [[retry-after:0]]"
    httpx.delete(f"{llm_server.url}/_requests")
    message = await failure(load_chat(tmp_path, llm_server.base_url), question)
    assert message.startswith("Exceed max retry times. OpenAI API hits InternalServerError: Error code: 500")
    sent = [r for r in recorded_requests(llm_server) if question in json.dumps(r["body"])]
    assert len(sent) == 3  # the first attempt and two retries


async def test_a_retry_after_past_the_deadline_fails_now_instead_of_waiting(
    tmp_path, llm_server: LLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    question = f"later {uuid.uuid4().hex} [[status:429]] [[retry-after:30]]"
    message = await failure(load_chat(tmp_path, llm_server.base_url, line_timeout=20), question)
    assert message.startswith("OpenAI API hits RateLimitError: Error code: 429 - triggered error 429")
    assert "Not retried: after attempt 1/5 the wait of 30 s would leave no time for another" in message
    assert not retry_lines(caplog)


async def test_a_stream_cut_midway_raises_naming_node_connection_and_url(
    tmp_path, llm_server: LLMServer
) -> None:
    executor = load_chat(tmp_path, llm_server.base_url)
    try:
        result = await executor.run_line({"question": "one two three [[cut:3]]"}, stream=True)
        stream = result.outputs["answer"]
        assert isinstance(stream, NodeStream)
        chunks: list[str] = []
        with pytest.raises(ExecutionError) as raised:
            async for chunk in stream:
                chunks.append(chunk)
    finally:
        executor.close()
    assert chunks == ["", "Echo: ", "one "]
    assert raised.value.to_dict()["innerError"]["code"] == "OpenAIError"
    assert raised.value.message == (
        f"LLM node 'chat': the streamed answer from {llm_server.base_url}/chat/completions for connection "
        "'llm' broke off after 3 chunks: the server closed the connection in the middle of its answer."
    )
    assert result.run.node_runs["chat"].error == raised.value.to_dict()


async def test_a_whole_answer_cut_midway_is_an_error_and_not_resent(tmp_path, llm_server: LLMServer) -> None:
    question = f"cut {uuid.uuid4().hex} [[cut:1]]"
    httpx.delete(f"{llm_server.url}/_requests")
    message = await failure(load_chat(tmp_path, llm_server.base_url), question)
    assert message == (
        f"LLM node 'chat': no complete answer from {llm_server.base_url}/chat/completions for connection "
        "'llm': the server closed the connection in the middle of its answer."
    )
    assert len([r for r in recorded_requests(llm_server) if question in json.dumps(r["body"])]) == 1


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: connecting to it hangs (the kernel drops the SYNs)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_a_connection_that_hangs_is_reported_before_the_line_times_out(
    tmp_path, unanswered_port: int
) -> None:
    executor = load_chat(tmp_path, f"http://127.0.0.1:{unanswered_port}/v1", line_timeout=3)
    message = await failure(executor, "hi")
    assert message.startswith(
        f"LLM node 'chat': cannot reach http://127.0.0.1:{unanswered_port}/v1/chat/completions for "
        "connection 'llm': connecting timed out after "
    )
    assert "Check the connection's base_url." in message


async def test_unprocessable_answers_are_tried_three_times_as_prompt_flow_does(
    tmp_path, llm_server: LLMServer
) -> None:
    question = f"odd {uuid.uuid4().hex} [[status:422]] [[retry-after:0]]"
    message = await failure(load_chat(tmp_path, llm_server.base_url), question)
    assert message.startswith(
        "Exceed max retry times. OpenAI API hits UnprocessableEntityError: Error code: 422"
    )
    assert len([r for r in recorded_requests(llm_server) if question in json.dumps(r["body"])]) == 3


async def test_flow_code_calling_prompt_flows_tools_counts_their_tokens(
    tmp_path, llm_server: LLMServer
) -> None:
    (tmp_path / "ask.py").write_text(
        "from promptflow.core import tool\n"
        "from promptflow.connections import OpenAIConnection\n"
        "from promptflow.tools.openai import chat\n\n"
        "@tool\n"
        "def ask(conn: OpenAIConnection, question: str) -> str:\n"
        "    return chat(connection=conn, prompt='# user:\\n{{q}}', model='m', q=question)\n"
    )
    (tmp_path / "flow.dag.yaml").write_text(
        "inputs: {question: {type: string}}\n"
        "outputs: {answer: {type: string, reference: '${ask.output}'}}\n"
        "nodes:\n- name: ask\n  type: python\n  source: {type: code, path: ask.py}\n"
        "  inputs: {conn: open_ai_connection, question: '${inputs.question}'}\n"
    )
    connection = OpenAIConnection(name="open_ai_connection", api_key="k", base_url=llm_server.base_url)
    executor = FlowExecutor.load(tmp_path, connections={"open_ai_connection": connection})
    try:
        result = await executor.run_line({"question": "what is up"})
    finally:
        executor.close()
    assert result.outputs == {"answer": "Echo: what is up"}
    assert result.run.node_runs["ask"].usage.completion_tokens == 4
