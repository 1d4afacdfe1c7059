"""Passing every non-scoring request on to the control plane's Unix socket.

The data plane owns the public port; the REST API and the studio live in the control plane
process. While that process restarts, its paths answer 503 with ``Retry-After`` and scoring
goes on.
"""

from __future__ import annotations

import orjson
from starlette.types import Receive, Scope, Send

from flowport import transport
from flowport.gateway.headers import HOP_BY_HOP, Headers
from flowport.gateway.proxy import RawResponse, StreamedResponse

MAX_BODY_BYTES = 2 * 1024 * 1024
"""The REST API reads no more (its specs and connections are a few KiB): refused here first."""
DRAINED_BYTES = 16 * 1024 * 1024

READ_TIMEOUT = 300.0
CONNECT_TIMEOUT = 5.0
RETRY_AFTER_SECONDS = 2
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
"""``expect``: the control plane would answer ``100 Continue`` first, which no hop here wants."""
NOT_RETURNED = HOP_BY_HOP | {b"date", b"server"}
"""The public server writes its own."""


class _TooLarge:
    """What ``_read_body`` returns for a body over the limit."""


TOO_LARGE = _TooLarge()


def _error(status: int, code: str, message: str, headers: Headers = ()) -> RawResponse:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return RawResponse(
        body, status, [(b"content-type", b"application/json"), (b"connection", b"close"), *headers]
    )


def _unavailable() -> RawResponse:
    message = "the control plane is restarting; scoring goes on; try again in a few seconds"
    return _error(
        503, "ControlPlaneUnavailable", message, [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
    )


def _too_large() -> RawResponse:
    return _error(
        413, "RequestTooLarge", f"the request body is larger than {MAX_BODY_BYTES // 1024 // 1024} MiB"
    )


def forwarded_headers(scope: Scope) -> Headers:
    """The client's headers, less hop-by-hop ones and any ``x-forwarded-*`` it made up, plus ours."""
    raw: Headers = scope["headers"]
    named = {
        token.strip().lower() for name, value in raw if name == b"connection" for token in value.split(b",")
    }
    headers = [
        (name, value)
        for name, value in raw
        if name not in NOT_FORWARDED and name not in named and not name.startswith(b"x-forwarded-")
    ]
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", str(client[0]).encode()))
    headers.append((b"x-forwarded-proto", scope["scheme"].encode()))
    host = next((value for name, value in raw if name == b"host"), None)
    if host:
        headers.append((b"x-forwarded-host", host))
    return headers


class ControlRelay:
    """A raw ASGI app forwarding to ``unix:socket`` over kept-alive connections."""

    def __init__(self, socket_path: str) -> None:
        self.transport = transport.HTTP11Transport(f"unix:{socket_path}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_body(receive)
        if body is None:  # the client left: nothing to forward
            return
        if isinstance(body, _TooLarge):
            await _too_large()(scope, receive, send)
            return
        target = scope["raw_path"] or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        # HEAD goes as GET (the transport reads the body a head announces); uvicorn sends no body.
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        headers = forwarded_headers(scope)
        for attempt in range(2):
            try:
                response = await self.transport.request(
                    method, target, headers, body, READ_TIMEOUT, CONNECT_TIMEOUT
                )
                break
            except transport.StaleConnection:
                if attempt:
                    await _unavailable()(scope, receive, send)
                    return
            except transport.ConnectError:
                await _unavailable()(scope, receive, send)
                return
            except transport.TransportError:
                await _error(502, "ControlPlaneFailed", "the control plane broke off the answer")(
                    scope, receive, send
                )
                return
        returned = [(k, v) for k, v in response.headers if k.lower() not in NOT_RETURNED]
        if b"close" in (response.header(b"connection") or b"").lower():
            returned.append((b"connection", b"close"))  # a 500 closes the client's connection too
        events = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
        relayed = StreamedResponse(response, returned, lambda *_: None, capture=False, watch=events)
        await relayed(scope, receive, send)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes | _TooLarge | None:
        """The body, or None if the client left. Past the limit the rest is read and dropped (up
        to ``DRAINED_BYTES``) so that the client, still sending, reads the 413 instead of a reset."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= MAX_BODY_BYTES:
                chunks.append(chunk)
            if not message.get("more_body", False) or size > DRAINED_BYTES:
                return b"".join(chunks) if size <= MAX_BODY_BYTES else TOO_LARGE

    async def aclose(self) -> None:
        await self.transport.aclose()
