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

MAX_BODY_BYTES = 64 * 1024 * 1024
READ_TIMEOUT = 300.0
CONNECT_TIMEOUT = 5.0
RETRY_AFTER_SECONDS = 2


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


class ControlRelay:
    """A raw ASGI app forwarding to ``unix:socket`` over kept-alive connections."""

    def __init__(self, socket_path: str) -> None:
        self.transport = transport.HTTP11Transport(f"unix:{socket_path}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_body(receive)
        if body is None:
            await _error(413, "BodyTooLarge", f"the request body is over {MAX_BODY_BYTES} bytes")(
                scope, receive, send
            )
            return
        target = scope["raw_path"] or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k not in HOP_BY_HOP and k not in (b"host", b"content-length")
        ]
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", str(client[0]).encode()))
        headers.append((b"x-forwarded-proto", scope["scheme"].encode()))
        for attempt in range(2):
            try:
                response = await self.transport.request(
                    scope["method"], target, headers, body, READ_TIMEOUT, CONNECT_TIMEOUT
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
        returned = [(k, v) for k, v in response.headers if k.lower() not in HOP_BY_HOP]
        events = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
        relayed = StreamedResponse(response, returned, lambda *_: None, capture=False, watch=events)
        await relayed(scope, receive, send)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def aclose(self) -> None:
        await self.transport.aclose()
