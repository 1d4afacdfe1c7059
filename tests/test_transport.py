"""flowport's lean HTTP/1.1 client on the LLM path: lines split anywhere, TLS, proxies (real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from flowport.connections import OpenAIConnection
from flowport.testing.llm_server import LLMServer
from flowport.tools.openai_http import APIError, OpenAIHTTP, proxy_for
from flowport.transport import ConnectError, HTTP11Transport
from tests.conftest import free_port

CHAT = {"model": "m", "messages": [{"role": "user", "content": "one two"}]}


@pytest.fixture
async def awkward_server() -> AsyncIterator[str]:
    """Answers every request with a chunked SSE body written in pieces split mid-line and mid-CRLF."""
    pieces = [b"data: first\r", b"\ndata: sec", b"ond\n\nda", b"ta: third\r\n", b"\r", b"\nlast-without-end"]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)  # each piece arrives on its own
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_lines_come_whole_however_the_body_is_split(awkward_server: str) -> None:
    transport = HTTP11Transport(awkward_server)
    response = await transport.request("GET", b"/events", [])
    lines = [line async for line in response.aiter_lines()]
    await response.aclose()
    await transport.aclose()
    assert lines == [b"data: first", b"data: second", b"", b"data: third", b"", b"last-without-end"]


@pytest.fixture(scope="module")
def https_llm(certificate: tuple[str, str]) -> Iterator[LLMServer]:
    with LLMServer(tls=certificate) as server:
        yield server


async def test_llm_calls_over_verified_tls(
    https_llm: LLMServer, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])  # trust the test certificate, as httpx does
    client = OpenAIHTTP(OpenAIConnection(name="tls", api_key="k", base_url=https_llm.base_url))
    assert client.transport is not None and https_llm.base_url.startswith("https://")
    answer = await client.create("chat/completions", CHAT)
    assert answer["choices"][0]["message"]["content"] == "Echo: one two"
    chunks = [chunk async for chunk in await client.stream("chat/completions", {**CHAT, "stream": True})]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: one two"
    await client.transport.aclose()


async def test_tls_refuses_a_certificate_it_does_not_trust(https_llm: LLMServer) -> None:
    transport = HTTP11Transport(https_llm.url)
    with pytest.raises(ConnectError, match="TLS certificate not trusted: self-signed certificate") as raised:
        await transport.request("GET", b"/health", [], connect_timeout=5)
    assert raised.value.reason == "TLS certificate not trusted: self-signed certificate"


@pytest.fixture
async def forwarding_proxy() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A plain HTTP forward proxy: takes absolute-form requests, fetches them, answers them."""
    seen: list[bytes] = []

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        seen.append(request_line.encode())
        method, url, _ = request_line.split(" ")
        headers = dict(line.split(": ", 1) for line in header_lines if line)
        headers = {k.lower(): v for k, v in headers.items() if k.lower() not in ("host", "proxy-connection")}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        async with httpx.AsyncClient(trust_env=False) as upstream:
            answer = await upstream.request(method, url, content=body, headers=headers)
        writer.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (
                answer.status_code,
                answer.headers["content-type"].encode(),
                len(answer.content),
                answer.content,
            )
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


async def test_an_environment_proxy_is_used_unless_no_proxy_exempts_the_host(
    forwarding_proxy: tuple[str, list[bytes]], llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, seen = forwarding_proxy
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    connection = OpenAIConnection(name="p", api_key="k", base_url=llm_server.base_url)
    assert proxy_for(urlsplit(llm_server.base_url)) == proxy
    proxied = OpenAIHTTP(connection)
    assert proxied.transport is None
    answer = await proxied.create("chat/completions", CHAT)
    assert answer["choices"][0]["message"]["content"] == "Echo: one two"
    assert seen == [f"POST {llm_server.base_url}/chat/completions HTTP/1.1".encode()]

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    direct = OpenAIHTTP(connection)
    assert direct.transport is not None
    assert (await direct.create("chat/completions", CHAT))["choices"][0]["message"][
        "content"
    ] == "Echo: one two"
    assert len(seen) == 1
    await direct.transport.aclose()


async def test_an_unreachable_proxy_is_named_without_its_credentials(
    llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://user:secret@127.0.0.1:{port}")
    client = OpenAIHTTP(OpenAIConnection(name="p", api_key="k", base_url=llm_server.base_url))
    with pytest.raises(APIError) as raised:
        await client.create("chat/completions", CHAT)
    error = raised.value
    assert (error.name, error.unreachable, error.retryable) == ("APIConnectionError", True, False)
    assert error.reason is not None and error.reason.startswith(
        f"through the proxy http://127.0.0.1:{port}: "
    )
    assert "secret" not in error.reason and error.url == f"{llm_server.base_url}/chat/completions"


def test_a_base_url_path_prefixes_every_request() -> None:
    client = OpenAIHTTP(OpenAIConnection(name="x", api_key="k", base_url="https://models.example/openai/v1/"))
    assert (client.origin, client.prefix) == ("https://models.example", "/openai/v1")
    assert client._target("m", "chat/completions") == "/openai/v1/chat/completions"


async def test_a_kept_alive_connection_dropped_by_the_server_is_retried_on_a_new_one() -> None:
    body = b'{"choices": [{"message": {"content": "ok"}}]}'
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    requests: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = len({n for n in requests}) + 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            requests.append(connection)
            if requests.count(connection) == 2:  # the second request on a connection: drop it unanswered
                writer.close()
                return
            writer.write(answer)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = OpenAIHTTP(OpenAIConnection(name="x", api_key="k", base_url=f"http://127.0.0.1:{port}/v1"))
        for _ in range(2):
            completion = await client.create("chat/completions", CHAT)
            assert completion["choices"][0]["message"]["content"] == "ok"
        assert client.transport is not None
        await client.transport.aclose()
    assert requests == [1, 1, 2]


async def test_a_fresh_connection_closed_unanswered_is_not_sent_again() -> None:
    received: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = OpenAIHTTP(OpenAIConnection(name="x", api_key="k", base_url=f"http://127.0.0.1:{port}/v1"))
        with pytest.raises(APIError) as raised:
            await client.create("chat/completions", CHAT)
        assert raised.value.name == "APIConnectionError"
    assert len(received) == 1  # an LLM call is billed: only a request that never arrived is resent
    assert b"accept: application/json" in received[0] and b"user-agent: flowport/" in received[0]
