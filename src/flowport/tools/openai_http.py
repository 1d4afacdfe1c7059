"""A thin async client for the OpenAI (and Azure OpenAI) completions APIs.

Why not the ``openai`` SDK on the hot path: under load it spent about half of an
instance's CPU building request models and parsing responses into pydantic objects, and
its import costs 23 MiB per process (docs/performance.md). This client sends the same JSON
bodies and reads the same JSON answers with orjson, and names errors as the SDK does, so
error messages stay prompt flow's.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from flowport.connections import AzureOpenAIConnection, Connection, CustomConnection

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
    {
        "RateLimitError",
        "InternalServerError",
        "UnprocessableEntityError",
        "APITimeoutError",
        "APIConnectionError",
    }
)


class APIError(Exception):
    """An error answer (or no answer) from the API, named as the openai SDK names it."""

    def __init__(self, name: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.name in RETRYABLE


def _status_error(response: httpx.Response) -> APIError:
    status = response.status_code
    name = _STATUS_ERRORS.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
    detail: Any = response.text.strip()
    try:
        body = orjson.loads(response.content)
        error = body.get("error", body) if isinstance(body, dict) else body
        detail = error.get("message", error) if isinstance(error, dict) else error
    except orjson.JSONDecodeError:
        pass
    header = response.headers.get("retry-after")
    try:
        retry_after = float(header) if header is not None else None
    except ValueError:
        retry_after = None
    return APIError(name, f"Error code: {status} - {detail}", retry_after)


def create_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


class OpenAIHTTP:
    """One connection's endpoint, with its own keep-alive pool."""

    def __init__(
        self, connection: Connection, max_connections: int, tls: ssl.SSLContext | None = None
    ) -> None:
        """``tls``: one verified context shared by a pool's clients (each would load the CA
        bundle again: about 1 MiB apiece)."""
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        headers = {"content-type": "application/json"}
        self.azure_version: str | None = None
        if isinstance(connection, AzureOpenAIConnection):
            self.base = f"{str(connection.api_base).rstrip('/')}/openai/deployments"
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
            self.base = str(base or "https://api.openai.com/v1").rstrip("/")
            headers["authorization"] = f"Bearer {key}"
        self.client = httpx.AsyncClient(
            limits=limits,
            timeout=httpx.Timeout(600.0, connect=10.0),
            headers=headers,
            verify=tls or httpx.create_ssl_context(),
        )

    def _url(self, model: str, path: str) -> str:
        if self.azure_version is None:
            return f"{self.base}/{path}"
        return f"{self.base}/{model}/{path}?api-version={self.azure_version}"

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.client.post(self._url(body["model"], path), content=orjson.dumps(body))
        except httpx.TimeoutException:
            raise APIError("APITimeoutError", "Request timed out.") from None
        except httpx.TransportError:
            raise APIError("APIConnectionError", "Connection error.") from None
        if response.status_code >= 400:
            raise _status_error(response)
        return orjson.loads(response.content)

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The server-sent chunks of a streamed answer. Errors before the first chunk raise."""
        request = self.client.build_request(
            "POST", self._url(body["model"], path), content=orjson.dumps(body)
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise APIError("APITimeoutError", "Request timed out.") from None
        except httpx.TransportError:
            raise APIError("APIConnectionError", "Connection error.") from None
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise _status_error(response)
        return _events(response)


async def _events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            yield orjson.loads(data)
    finally:
        await response.aclose()
