"""The offline test LLM server, driven over loopback HTTP by the real OpenAI SDK."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, AzureOpenAI, OpenAI
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from flowport.testing.llm_server import LLMServer

KEY = "sk-test"
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer() as running:
        yield running


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LLMServer]:
    with LLMServer(api_key=KEY) as running:
        yield running


@pytest.fixture
def client(server: LLMServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.base_url, api_key="anything", max_retries=0) as sdk:
        yield sdk


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def auth() -> dict[str, str]:
    return {"authorization": "Bearer x"}


def test_chat_reply(client: OpenAI) -> None:
    result = client.chat.completions.create(model="gpt-x", messages=user("hello world"))
    assert result.id.startswith("chatcmpl-")
    assert result.object == "chat.completion"
    assert result.model == "gpt-x"
    assert result.system_fingerprint
    [choice] = result.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: hello world"
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None


def test_chat_uses_last_user_message_and_text_parts(client: OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo: first"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "second"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                {"type": "text", "text": "part"},
            ],
        },
        {"role": "system", "content": "trailing system"},
    ]
    result = client.chat.completions.create(model="m", messages=messages)
    assert result.choices[0].message.content == "Echo: second [image image/png 1 bytes] part"


def test_chat_shows_each_image_part(client: OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
                {"type": "text", "text": "two"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/jpeg;base64,AAECAw==", "detail": "low"},
                },
            ],
        }
    ]
    result = client.chat.completions.create(model="m", messages=messages)
    reply = "Echo: [image https://example.invalid/a.png] two [image image/jpeg 4 bytes]"
    assert result.choices[0].message.content == reply


def test_chat_refuses_a_broken_image_part(client: OpenAI) -> None:
    for url in ("data:image/png;base64,@@@", None):
        part: Any = {"type": "image_url", "image_url": {"url": url}}
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": [part]}])


def test_chat_without_user_message(client: OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "only system"}]
    result = client.chat.completions.create(model="m", messages=messages)
    assert result.choices[0].message.content == "Echo: "


def test_completion_reply(client: OpenAI) -> None:
    result = client.completions.create(model="m", prompt="once upon a time", n=3, seed=1)
    assert result.id.startswith("cmpl-")
    assert result.object == "text_completion"
    [choice] = result.choices
    assert choice.text == "Echo: once upon a time"
    assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 5)

    listed = client.completions.create(model="m", prompt=["first prompt", "second"])
    assert listed.choices[0].text == "Echo: first prompt"


def test_default_model(server: LLMServer) -> None:
    body = {"messages": user("hi")}
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, headers=auth())
    assert response.status_code == 200
    assert response.json()["model"] == "test-model"


def test_usage_counts(client: OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are very helpful"},
        {"role": "user", "content": "hello  big\nworld"},
    ]
    result = client.chat.completions.create(model="m", messages=messages)
    assert result.usage is not None
    assert result.usage.prompt_tokens == 7
    assert result.usage.completion_tokens == 4
    assert result.usage.total_tokens == 11


def test_stream_matches_non_stream(client: OpenAI) -> None:
    expected = client.chat.completions.create(model="m", messages=user("hello world"))
    chunks = list(client.chat.completions.create(model="m", messages=user("hello world"), stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    pieces = [c.choices[0].delta.content or "" for c in chunks[1:-1]]
    assert pieces == ["Echo: ", "hello ", "world"]
    assert "".join(pieces) == expected.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


async def test_async_stream_include_usage(server: LLMServer) -> None:
    async with AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="m",
            messages=user("one two three"),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == 3
    assert usage_chunk.usage.completion_tokens == 4
    assert usage_chunk.usage.total_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == "Echo: one two three"


async def test_async_completion_stream(server: LLMServer) -> None:
    async with AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as sdk:
        expected = await sdk.completions.create(model="m", prompt="a b c")
        stream = await sdk.completions.create(
            model="m", prompt="a b c", stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.object == "text_completion" for c in chunks)
    pieces = [c.choices[0].text for c in chunks[:-2]]
    assert pieces == ["Echo: ", "a ", "b ", "c"]
    assert "".join(pieces) == expected.choices[0].text
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_max_tokens_truncates(client: OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=user("one two three four"), max_tokens=2)
    assert result.choices[0].message.content == "Echo: one"
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert result.usage.completion_tokens == 2

    stream = client.chat.completions.create(
        model="m", messages=user("one two three four"), max_tokens=2, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: one"
    assert chunks[-1].choices[0].finish_reason == "length"

    completion = client.completions.create(model="m", prompt="x y z", max_tokens=3)
    assert completion.choices[0].text == "Echo: x y"
    assert completion.choices[0].finish_reason == "length"


def test_max_tokens_not_reached(client: OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=user("short"), max_tokens=50)
    assert result.choices[0].message.content == "Echo: short"
    assert result.choices[0].finish_reason == "stop"


def test_stop(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="m", messages=user("alpha beta gamma"), stop=["gamma", "beta"]
    )
    assert result.choices[0].message.content == "Echo: alpha "
    assert result.choices[0].finish_reason == "stop"

    completion = client.completions.create(model="m", prompt="alpha beta", stop="ta")
    assert completion.choices[0].text == "Echo: alpha be"


def test_json_object(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="m", messages=user("hi there"), response_format={"type": "json_object"}
    )
    content = result.choices[0].message.content
    assert content is not None
    assert json.loads(content) == {"echo": "hi there"}


def test_tool_call(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="m",
        messages=user("weather please [[call:get_weather]]"),
        tools=TOOLS,
    )
    [choice] = result.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.id
    assert call.function.name == "get_weather"
    assert call.function.arguments == "{}"


def test_tool_call_stream(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=user("[[call:get_weather]]"),
        tools=TOOLS,
        stream=True,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert "".join(tc.function.arguments or "" for tc in calls if tc.function) == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_function_call_when_given_functions(client: OpenAI) -> None:
    functions = [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    result = client.chat.completions.create(
        model="m", messages=user("[[call:get_weather]]"), functions=functions
    )
    [choice] = result.choices
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call is not None
    assert (choice.message.function_call.name, choice.message.function_call.arguments) == (
        "get_weather",
        "{}",
    )
    assert choice.message.tool_calls is None
    refused = client.chat.completions.create(
        model="m", messages=user("[[call:get_weather]]"), functions=functions, function_call="none"
    )
    assert refused.choices[0].message.content == "Echo: [[call:get_weather]]"


def test_tool_call_ids_name_the_function(client: OpenAI) -> None:
    ids = {
        call.id
        for _ in range(2)
        for call in client.chat.completions.create(
            model="m", messages=user("[[call:get_weather]]"), tools=TOOLS
        )
        .choices[0]
        .message.tool_calls
        or []
    }
    assert ids == {"call_get_weather"}


def test_embeddings_are_deterministic_in_float_and_base64(client: OpenAI, server: LLMServer) -> None:
    first = client.embeddings.create(model="e", input="hello world")  # the SDK asks for base64
    again = client.embeddings.create(model="e", input=["hello world", "other"], encoding_format="float")
    assert len(first.data[0].embedding) == 8
    assert first.data[0].embedding == again.data[0].embedding
    assert again.data[1].embedding != again.data[0].embedding
    assert first.usage.prompt_tokens == 2
    assert len(client.embeddings.create(model="e", input="x", dimensions=16).data[0].embedding) == 16
    with AzureOpenAI(azure_endpoint=server.url, api_version="2024-02-01", api_key="k", max_retries=0) as sdk:
        assert (
            sdk.embeddings.create(model="dep", input="hello world").data[0].embedding
            == first.data[0].embedding
        )
    bad = httpx.post(
        f"{server.base_url}/embeddings", json={"model": "e", "input": 3}, headers={"api-key": "k"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


def test_call_marker_without_tools_is_echoed(client: OpenAI) -> None:
    result = client.chat.completions.create(model="m", messages=user("[[call:x]]"))
    assert result.choices[0].message.content == "Echo: [[call:x]]"


def test_auth(keyed_server: LLMServer) -> None:
    with OpenAI(base_url=keyed_server.base_url, api_key=KEY, max_retries=0) as sdk:
        assert sdk.chat.completions.create(model="m", messages=user("ok")).choices
    with (
        OpenAI(base_url=keyed_server.base_url, api_key="wrong", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        sdk.chat.completions.create(model="m", messages=user("no"))
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"

    body = {"messages": user("no key")}
    response = httpx.post(f"{keyed_server.base_url}/chat/completions", json=body)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error.pop("message")
    assert error == {"type": "invalid_request_error", "param": None, "code": "invalid_api_key"}

    headers = {"api-key": KEY}
    response = httpx.post(f"{keyed_server.base_url}/chat/completions", json=body, headers=headers)
    assert response.status_code == 200


def test_auth_any_key_when_unconfigured(server: LLMServer) -> None:
    url = f"{server.base_url}/chat/completions"
    body = {"messages": user("hi")}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"authorization": "Basic abc"}).status_code == 401
    assert httpx.post(url, json=body, headers={"api-key": "k"}).status_code == 200


@pytest.mark.parametrize(
    ("path", "content", "param"),
    [
        ("/chat/completions", b"{not json", None),
        ("/chat/completions", b"[1, 2]", None),
        ("/chat/completions", b'{"model": "m"}', "messages"),
        ("/chat/completions", b'{"messages": []}', "messages"),
        ("/completions", b'{"model": "m"}', "prompt"),
        ("/completions", b'{"prompt": "x", "max_tokens": "many"}', "max_tokens"),
    ],
)
def test_bad_request(server: LLMServer, path: str, content: bytes, param: str | None) -> None:
    response = httpx.post(server.base_url + path, content=content, headers=auth())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert "code" in error


def test_triggered_errors(client: OpenAI, server: LLMServer) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="m", messages=user("boom [[status:429]]"))
    assert raised.value.status_code == 429
    assert raised.value.response.headers["retry-after"] == "0"
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["message"] == "triggered error 429"

    with pytest.raises(openai.InternalServerError):
        client.completions.create(model="m", prompt="[[status:503]]")

    body = {"messages": user("[[status:418]]")}
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, headers=auth())
    assert response.status_code == 418
    assert response.json()["error"]["message"] == "triggered error 418"


def test_flaky_errors_pass_after_n_requests_with_the_retry_after_asked(client: OpenAI) -> None:
    text = "flaky [[flaky:429:2]] [[retry-after:3]]"
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="m", messages=user(text))
        assert raised.value.response.headers["retry-after"] == "3"
    reply = client.chat.completions.create(model="m", messages=user(text))
    assert reply.choices[0].message.content == f"Echo: {text}"
    with pytest.raises(openai.InternalServerError) as failed:
        client.completions.create(model="m", prompt="once [[flaky:500:1]]")
    assert "retry-after" not in failed.value.response.headers
    assert client.completions.create(model="m", prompt="once [[flaky:500:1]]").choices[0].text


def test_cut_answers_break_off_the_connection(server: LLMServer) -> None:
    body = {"model": "m", "messages": user("one two three [[cut:2]]"), "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, headers=auth()) as response:
        assert response.status_code == 200
        received: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            for line in response.iter_lines():
                received.append(line)
    assert len([line for line in received if line.startswith("data: ")]) == 2
    whole = {"model": "m", "prompt": "one two [[cut:1]]"}
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{server.base_url}/completions", json=whole, headers=auth())
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}  # the server lives on


def test_requests_log(client: OpenAI, server: LLMServer) -> None:
    assert httpx.delete(f"{server.url}/_requests").status_code == 204
    client.chat.completions.create(
        model="gpt-log",
        messages=user("logged"),
        temperature=0.25,
        seed=7,
        max_tokens=9,
        extra_headers={"X-Custom": "Value"},
    )
    [record] = httpx.get(f"{server.url}/_requests").json()
    assert record["path"] == "/v1/chat/completions"
    assert record["body"]["model"] == "gpt-log"
    assert record["body"]["temperature"] == 0.25
    assert record["body"]["seed"] == 7
    assert record["body"]["max_tokens"] == 9
    assert record["headers"]["x-custom"] == "Value"
    assert record["headers"]["authorization"] != "Bearer anything"
    assert "anything" not in json.dumps(record)

    assert httpx.delete(f"{server.url}/_requests").status_code == 204
    assert httpx.get(f"{server.url}/_requests").json() == []


def test_requests_log_keeps_last_100(server: LLMServer) -> None:
    httpx.delete(f"{server.url}/_requests")
    with httpx.Client(base_url=server.base_url, headers=auth()) as http:
        for i in range(105):
            http.post("/completions", json={"prompt": str(i)})
    records = httpx.get(f"{server.url}/_requests").json()
    assert len(records) == 100
    assert [r["body"]["prompt"] for r in records[:2]] == ["5", "6"]
    assert records[-1]["body"]["prompt"] == "104"


def test_azure(server: LLMServer) -> None:
    httpx.delete(f"{server.url}/_requests")
    with AzureOpenAI(
        azure_endpoint=server.url, api_version="2024-02-01", api_key="azure-key", max_retries=0
    ) as sdk:
        chat = sdk.chat.completions.create(model="my-deployment", messages=user("from azure"))
        completion = sdk.completions.create(model="other-deployment", prompt="legacy")
    assert chat.model == "my-deployment"
    assert chat.choices[0].message.content == "Echo: from azure"
    assert completion.model == "other-deployment"
    assert completion.choices[0].text == "Echo: legacy"
    paths = [r["path"] for r in httpx.get(f"{server.url}/_requests").json()]
    assert paths == [
        "/openai/deployments/my-deployment/chat/completions",
        "/openai/deployments/other-deployment/completions",
    ]


def test_models_and_health(client: OpenAI, server: LLMServer) -> None:
    assert [m.id for m in client.models.list()] == ["test-model"]
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}


def test_latency_header(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="m", messages=user("slow"), extra_headers={"x-test-latency-ms": "30"}
    )
    assert result.choices[0].message.content == "Echo: slow"


def test_configured_delays_and_restart() -> None:
    threads_before = threading.active_count()
    server = LLMServer(latency_ms=5, chunk_delay_ms=2)
    for _ in range(2):
        with (
            server,
            OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as sdk,
        ):
            stream = sdk.chat.completions.create(model="m", messages=user("a b"), stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == "Echo: a b"
            assert server.url == f"http://127.0.0.1:{server.port}"
    assert threading.active_count() == threads_before
