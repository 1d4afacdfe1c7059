"""A thin async client for the OpenAI (and Azure OpenAI) completions APIs.

Why not the ``openai`` SDK on the hot path: under load it spent about half of an
instance's CPU building request models and parsing responses into pydantic objects, and
its import costs 23 MiB per process (docs/performance.md). This client sends the same JSON
bodies and reads the same JSON answers with orjson, and names errors as the SDK does, so
error messages stay prompt flow's.

Requests go over flowport's lean keep-alive transport (``flowport.transport``); httpx cost
two thirds of a chat instance's CPU. When an ``HTTP(S)_PROXY`` / ``ALL_PROXY`` environment
variable applies to the API's host (``NO_PROXY`` honoured), an httpx client, which speaks
to proxies, is used instead.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import SplitResult, quote, urlsplit

import orjson

from flowport import __version__, transport
from flowport.connections import AzureOpenAIConnection, Connection, CustomConnection
from flowport.tracing import genai
from flowport.transport import HTTP11Transport

if TYPE_CHECKING:
    import httpx

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
KEEP_ALIVE_SECONDS = 4.0
"""Below the 5 s after which uvicorn-like servers drop an idle connection."""
ACCEPT_JSON = b"application/json"
ACCEPT_EVENTS = b"text/event-stream"

_STATUS_ERRORS = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
}
RETRYABLE = frozenset(
    {"RateLimitError", "InternalServerError", "UnprocessableEntityError", "APITimeoutError"}
)
"""What may pass if asked again, as prompt flow's LLM tool judges it. A connection error is
retried only when the server hung up before answering (``reason`` tells); an unreachable
server (refused, unknown host, TLS) is not: asking again would fail the same way."""


class APIError(Exception):
    """An error answer (or no answer) from the API, named as the openai SDK names it.

    ``url`` is the request's address; ``reason`` says in a few words why no answer came
    (connection errors and timeouts only); ``retryable`` whether asking again may help.
    """

    def __init__(
        self,
        name: str,
        message: str,
        retry_after: float | None = None,
        *,
        reason: str | None = None,
        retryable: bool | None = None,
        unreachable: bool = False,
        url: str = "",
    ) -> None:
        super().__init__(message)
        self.name = name
        self.retry_after = retry_after
        self.reason = reason
        self.unreachable = unreachable
        """No connection could be made: the address (or its certificate) is wrong, or the server down."""
        self.retryable = name in RETRYABLE if retryable is None else retryable
        self.url = url


class Answer(Protocol):
    """An answer whose headers arrived: ``flowport.transport.UpstreamResponse`` or ``_HttpxAnswer``."""

    status_code: int

    def header(self, name: bytes) -> bytes | None: ...
    async def aread(self) -> bytes: ...
    def aiter_lines(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


@contextlib.contextmanager
def _httpx_errors(proxy: str = "") -> Iterator[None]:
    """httpx's failures (the proxy path) as the transport's, so callers catch one family."""
    import httpx

    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise transport.ConnectTimeout(str(exc)) from exc
    except httpx.TimeoutException as exc:
        raise transport.TimeoutException(str(exc)) from exc
    except (httpx.ConnectError, httpx.ProxyError) as exc:
        reason = f"through the proxy {proxy}: {exc or type(exc).__name__}" if proxy else str(exc)
        raise transport.ConnectError(str(exc), reason) from exc
    except httpx.RemoteProtocolError as exc:
        if "without sending a response" in str(exc):
            raise transport.RemoteProtocolError(str(exc)) from exc
        raise transport.ReadError(str(exc)) from exc
    except httpx.TransportError as exc:
        raise transport.TransportError(str(exc)) from exc


class _HttpxAnswer:
    """An httpx response (the proxy path) seen as an ``Answer``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status_code = response.status_code

    def header(self, name: bytes) -> bytes | None:
        value = self.response.headers.get(name.decode("latin-1"))
        return value.encode("latin-1") if value is not None else None

    async def aread(self) -> bytes:
        with _httpx_errors():
            return await self.response.aread()

    async def aiter_lines(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for line in self.response.aiter_lines():
                yield line.encode()

    async def aclose(self) -> None:
        await self.response.aclose()


async def _status_error(answer: Answer, url: str) -> APIError:
    status = answer.status_code
    name = _STATUS_ERRORS.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
    content = await answer.aread()
    detail: Any = content.decode(errors="replace").strip()
    error: Any = None
    try:
        body = orjson.loads(content)
        error = body.get("error", body) if isinstance(body, dict) else body
        detail = error.get("message", error) if isinstance(error, dict) else error
    except orjson.JSONDecodeError:
        pass
    header = answer.header(b"retry-after")
    try:
        retry_after = float(header) if header is not None else None
    except ValueError:
        retry_after = None
    # an exhausted quota does not come back by waiting (prompt flow does not retry it either)
    no_quota = isinstance(error, dict) and "insufficient_quota" in (error.get("code"), error.get("type"))
    retryable = False if no_quota else None
    return APIError(name, f"Error code: {status} - {detail}", retry_after, retryable=retryable, url=url)


def create_ssl_context() -> ssl.SSLContext:
    """Verified TLS as httpx and the openai SDK set it up: SSL_CERT_FILE, SSL_CERT_DIR, else certifi."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def proxy_for(url: SplitResult) -> str | None:
    """The proxy the environment names for ``url``, unless NO_PROXY exempts its host."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.hostname or ""):
        return None
    return proxy


def _without_credentials(address: str) -> str:
    """``scheme://host[:port]`` of an address, without the user and password it may hold."""
    parts = urlsplit(address)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def address_field(connection: Connection) -> str:
    """The connection field the API's address comes from, for error messages."""
    if isinstance(connection, AzureOpenAIConnection):
        return "api_base"
    if isinstance(connection, CustomConnection):
        return "api_base" if connection.get("api_base") else "base_url"
    return "base_url" if getattr(connection, "base_url", None) else "api_base"


class OpenAIHTTP:
    """One connection's API endpoint, with its own keep-alive connections."""

    def __init__(self, connection: Connection, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: one verified context for every client of a process (each would load the CA
        bundle again: about 1 MiB apiece)."""
        headers = {"content-type": "application/json", "user-agent": f"flowport/{__version__}"}
        self.azure_version: str | None = None
        if isinstance(connection, AzureOpenAIConnection):
            base = f"{str(connection.api_base).rstrip('/')}/openai/deployments"
            self.azure_version = connection.api_version or "2024-02-01"
            headers["api-key"] = str(connection.api_key)
        else:
            if isinstance(connection, CustomConnection):
                key, base = (
                    connection.get("api_key"),
                    connection.get("api_base") or connection.get("base_url"),
                )
            else:
                key = connection.api_key
                base = getattr(connection, "base_url", None) or getattr(connection, "api_base", None)
                if getattr(connection, "organization", None):
                    headers["openai-organization"] = connection.organization
            base = str(base or "https://api.openai.com/v1")
            headers["authorization"] = f"Bearer {key}"
        url = urlsplit(base.rstrip("/"))
        self.origin = f"{url.scheme}://{url.netloc}"
        self.prefix = url.path.rstrip("/")
        """The base URL's path, which every request's path starts with."""
        self.shown_origin = _without_credentials(self.origin)
        """The origin as error messages show it: without credentials a URL may carry."""
        tls = tls or create_ssl_context()
        self.transport: HTTP11Transport | None = None
        self.proxied: httpx.AsyncClient | None = None
        proxy = proxy_for(url)
        self.shown_proxy = _without_credentials(proxy) if proxy else ""
        if proxy is None:
            self.transport = HTTP11Transport(self.origin, idle_seconds=KEEP_ALIVE_SECONDS, tls=tls)
            self.headers = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
        else:
            import httpx  # only here: it imports rich, click and pygments (its command line)

            timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
            self.proxied = httpx.AsyncClient(timeout=timeout, headers=headers, verify=tls, trust_env=True)

    def _target(self, model: str, path: str) -> str:
        if self.azure_version is None:
            return f"{self.prefix}/{path}"
        return (
            f"{self.prefix}/{quote(model, safe='')}/{path}?api-version={quote(self.azure_version, safe='')}"
        )

    def url(self, model: str, path: str) -> str:
        """The address a request for ``model`` to ``path`` goes to, as error messages show it."""
        return self.shown_origin + self._target(model, path)

    async def _post(self, path: str, body: dict[str, Any], connect_timeout: float) -> Answer:
        """POST ``body`` to the API's ``path``; the answer once its headers arrived."""
        target = self._target(body["model"], path)
        content = orjson.dumps(body)
        accept = ACCEPT_EVENTS if body.get("stream") else ACCEPT_JSON
        with _api_errors(self.shown_origin + target, connect_timeout):
            if self.transport is not None:
                send = partial(
                    self.transport.request,
                    "POST",
                    target.encode("ascii"),
                    [*self.headers, (b"accept", accept)],
                    content,
                    READ_TIMEOUT,
                    connect_timeout,
                )
                try:
                    return await send()
                except transport.StaleConnection:  # the request never reached the API: resend it
                    return await send(fresh=True)
            assert self.proxied is not None
            import httpx  # loaded already: the proxied client uses it

            with _httpx_errors(self.shown_proxy):
                request = self.proxied.build_request(
                    "POST",
                    self.origin + target,
                    content=content,
                    headers={"accept": accept.decode()},
                    timeout=httpx.Timeout(READ_TIMEOUT, connect=connect_timeout),
                )
                return _HttpxAnswer(await self.proxied.send(request, stream=True))

    def _span(self, path: str, body: dict[str, Any]) -> Any:
        url = urlsplit(self.origin)
        provider = "azure.ai.openai" if self.azure_version is not None else "openai"
        return genai.start_call(path, body, provider, url.hostname or "", url.port)

    async def create(
        self, path: str, body: dict[str, Any], connect_timeout: float = CONNECT_TIMEOUT
    ) -> dict[str, Any]:
        """The JSON answer. ``connect_timeout``: a caller with a deadline may shorten it."""
        span = self._span(path, body)
        if span is None:
            return await self._create(path, body, connect_timeout)
        try:
            answer = await self._create(path, body, connect_timeout)
        except BaseException as exc:
            genai.failed_call(span, exc)
            raise
        genai.end_call(span, answer)
        return answer

    async def _create(self, path: str, body: dict[str, Any], connect_timeout: float) -> dict[str, Any]:
        answer = await self._post(path, body, connect_timeout)
        url = self.url(body["model"], path)
        try:
            with _api_errors(url):
                if answer.status_code >= 400:
                    raise await _status_error(answer, url)
                content = await answer.aread()
            try:
                return orjson.loads(content)
            except orjson.JSONDecodeError:
                raise APIError(
                    "APIError", "The API answered with a body that is not JSON.", retryable=False, url=url
                ) from None
        finally:
            await answer.aclose()

    async def stream(
        self, path: str, body: dict[str, Any], connect_timeout: float = CONNECT_TIMEOUT
    ) -> AsyncIterator[dict[str, Any]]:
        """The server-sent chunks of a streamed answer. Errors before the first chunk raise;
        later ones (the connection cut, an error event) raise ``APIError`` from the iterator."""
        span = self._span(path, body)
        try:
            answer = await self._post(path, body, connect_timeout)
            url = self.url(body["model"], path)
            if answer.status_code >= 400:
                try:
                    with _api_errors(url):
                        raise await _status_error(answer, url)
                finally:
                    await answer.aclose()
        except BaseException as exc:
            if span is not None:
                genai.failed_call(span, exc)
            raise
        events = _events(answer, url)
        return events if span is None else genai.traced_stream(span, events)


_CLOSED_EARLY = "the server closed the connection without answering"
_CUT = "the server closed the connection in the middle of its answer"


@contextlib.contextmanager
def _api_errors(url: str, connect_timeout: float = CONNECT_TIMEOUT) -> Iterator[None]:
    """A failed exchange as the openai SDK names it, with the reason in a few words.

    Only a server that hung up before answering, or an answer that timed out, is worth asking
    again; a connection that cannot be made, or an answer cut midway, is not.
    """
    try:
        yield
    except transport.ConnectTimeout:
        raise APIError(
            "APITimeoutError",
            "Request timed out.",
            reason=f"connecting timed out after {connect_timeout:.3g} s",
            unreachable=True,
            url=url,
        ) from None
    except transport.TimeoutException:
        raise APIError(
            "APITimeoutError", "Request timed out.", reason=f"no answer within {READ_TIMEOUT:g} s", url=url
        ) from None
    except transport.ConnectError as exc:
        raise APIError(
            "APIConnectionError",
            "Connection error.",
            reason=exc.reason,
            retryable=False,
            unreachable=True,
            url=url,
        ) from None
    except transport.ReadError:
        raise APIError(
            "APIConnectionError", "Connection error.", reason=_CUT, retryable=False, url=url
        ) from None
    except transport.RemoteProtocolError as exc:
        early = "before answering" in str(exc) or "without sending a response" in str(exc)
        reason = _CLOSED_EARLY if early else str(exc)
        raise APIError(
            "APIConnectionError", "Connection error.", reason=reason, retryable=early, url=url
        ) from None
    except transport.TransportError as exc:
        raise APIError(
            "APIConnectionError", "Connection error.", reason=str(exc), retryable=False, url=url
        ) from None


async def _events(answer: Answer, url: str) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of a server-sent event stream, up to ``[DONE]``.

    An ``error`` object in place of a chunk (OpenAI's way to fail a stream that started)
    raises ``APIError``; so does a connection cut before the answer's end.
    """
    try:
        with _api_errors(url):
            async for line in answer.aiter_lines():
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise APIError(
                        "APIError", "The API sent an event that is not JSON.", retryable=False, url=url
                    ) from None
                error = chunk.get("error") if isinstance(chunk, dict) else None
                if error:
                    message = error.get("message") if isinstance(error, dict) else None
                    raise APIError("APIError", str(message or error), retryable=False, url=url)
                yield chunk
    finally:
        await answer.aclose()
