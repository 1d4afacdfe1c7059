"""LLM nodes against the project's OpenAI-compatible test server (real HTTP, no mocks)."""

from __future__ import annotations

import httpx
import pytest

from flowport.connections import AzureOpenAIConnection, OpenAIConnection
from flowport.engine import FlowExecutor, NodeStream
from flowport.testing.llm_server import LLMServer
from flowport.tools.chat_parser import ChatFormatError, parse_chat
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
