"""Forwarding one request to an instance and relaying its answer, as Azure maps it.

The body goes as bytes over the instance's pooled connection. A failed connect, or a
connection closed before any response byte (an instance draining during a rolling update),
is retried once on another ready instance. 2xx, 408 and 429 stream back unbuffered; any
other status becomes 424 with the instance's body and its status and reason in headers.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from flowport import transport
from flowport.gateway import errors
from flowport.gateway.headers import Headers
from flowport.gateway.table import DeploymentState
from flowport.gateway.upstream import Upstream
from flowport.transport import UpstreamResponse

RETRYABLE = (transport.NetworkError, transport.RemoteProtocolError, transport.ConnectTimeout)
"""Failures before the instance sent a byte: safe to try another instance."""
CONNECT_FAILED = (transport.ConnectError, transport.ConnectTimeout)
PASSED_THROUGH = frozenset({408, 429})
CAPTURE_LIMIT = 1024 * 1024

Done = Callable[[int, bytes | None, bool], None]
"""Called once when the answer is over: (status sent, captured body or None, body truncated)."""


async def open_upstream(
    state: DeploymentState,
    method: str,
    target: bytes,
    headers: Headers,
    body: bytes | None,
    timeout: float,
    on_retry: Callable[[DeploymentState], None] | None = None,
) -> tuple[UpstreamResponse, Upstream]:
    """Send to the least busy instance (retrying once) and return its response, headers read.

    The chosen upstream is acquired in its pool: the caller releases it. Raises Refusal
    (503 no instance, 502 unreachable, 408 no answer in time).
    """
    pool = state.pool
    upstream = pool.choose()
    if upstream is None:
        raise errors.no_instance(state.name)
    connect_timeout = min(timeout, 5.0)
    for attempt in range(2):
        pool.acquire(upstream)
        try:
            response = await upstream.transport.request(
                method, target, headers, body, timeout, connect_timeout
            )
            return response, upstream
        except RETRYABLE as exc:
            pool.release(upstream)
            if isinstance(exc, CONNECT_FAILED):
                upstream.mark_failed()
            retry = pool.choose(avoid=upstream) if attempt == 0 else None
            if retry is None:
                break
            if on_retry is not None:
                on_retry(state)
            upstream = retry
        except transport.TimeoutException:
            pool.release(upstream)
            raise errors.timed_out(state.name, timeout) from None
        except transport.TransportError:
            pool.release(upstream)
            raise errors.bad_gateway(state.name) from None
        except BaseException:
            pool.release(upstream)
            raise
    raise errors.bad_gateway(state.name)


def model_error_reason(status: int, body: bytes) -> str:
    """``error.code`` of a JSON error body, else the status's reason phrase."""
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        code = payload["error"].get("code")
        if isinstance(code, str) and code:
            return code
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class RawResponse(Response):
    """A whole body with headers given as raw pairs (their content-length replaced)."""

    def __init__(self, body: bytes, status: int, headers: Headers) -> None:
        self.body = body
        self.status_code = status
        self.background = None
        self.raw_headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        self.raw_headers.append((b"content-length", str(len(body)).encode()))


def failed_dependency(status: int, body: bytes, headers: Headers) -> RawResponse:
    """Azure's 424: the instance answered an error; its status and reason go in headers."""
    headers = [
        *headers,
        (b"ms-azureml-model-error-statuscode", str(status).encode()),
        (b"ms-azureml-model-error-reason", model_error_reason(status, body).encode("latin-1", "replace")),
    ]
    return RawResponse(body, 424, headers)


class StreamedResponse(Response):
    """Relays an instance's response as its bytes arrive; always closes it, then calls ``done``.

    For server-sent events it also watches for the client going away, so an abandoned
    stream stops pulling from the instance.
    """

    def __init__(
        self, upstream: UpstreamResponse, headers: Headers, done: Done, capture: bool, watch: bool
    ) -> None:
        self.upstream = upstream
        self.status_code = upstream.status_code
        self.raw_headers = headers
        self.background = None
        self.done = done
        self.capture = capture
        self.watch = watch
        self._captured: list[bytes] = []
        self._captured_size = 0
        self._truncated = False
        length = upstream.header(b"content-length")
        self._remaining = int(length) if length is not None and length.isdigit() else -1
        """Bytes of a sized body still to come: its last chunk goes out as the end of the answer."""
        self._ended = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            whole = None if self.watch else self.upstream.arrived()
            if whole is not None:  # a small answer, already here: one message, no iteration
                if self.capture:
                    self._keep(whole)
                self._ended = True
                await send({"type": "http.response.body", "body": whole, "more_body": False})
            elif self.watch:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
                    await self._relay(send)
                    group.cancel_scope.cancel()
            else:
                await self._relay(send)
            if not self._ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.upstream.close()
            captured = b"".join(self._captured) if self.capture else None
            self.done(self.status_code, captured, self._truncated)

    async def _relay(self, send: Send) -> None:
        try:
            async for chunk in self.upstream.aiter_raw():
                if self.capture and not self._truncated:
                    self._keep(chunk)
                if self._remaining > 0:
                    self._remaining -= len(chunk)
                    self._ended = self._remaining <= 0
                await send({"type": "http.response.body", "body": chunk, "more_body": not self._ended})
        except transport.TransportError:  # the instance broke off midway: end the answer there
            self._truncated = True

    def _keep(self, chunk: bytes) -> None:
        if self._captured_size + len(chunk) > CAPTURE_LIMIT:
            self._truncated = True
            return
        self._captured.append(chunk)
        self._captured_size += len(chunk)

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return
