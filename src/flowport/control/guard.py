"""The REST API's outer guard: a bounded request body, and no 500 that leaks or lingers.

A body larger than ``MAX_BODY_BYTES`` is refused with 413 before anything reads it. An
unexpected exception becomes a one-line JSON 500 (no traceback: that goes to the server log)
with ``Connection: close``, so a keep-alive client opens a fresh connection for its next
request instead of being reset on a connection the failure may have left in a bad state.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("flowport.api")

MAX_BODY_BYTES = 2 * 1024 * 1024
"""The largest request body the API reads (YAML specs and connections are a few KiB)."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ApiGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if scope["method"] in _BODY_METHODS:
                receive = await self._bounded(scope, receive)
                if receive is None:
                    limit = f"{self.max_body_bytes // 1024 // 1024} MiB"
                    await answer(send, 413, "RequestTooLarge", f"the request body is larger than {limit}")
                    return
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if started:
                raise
            message = (
                f"the server failed on {scope['method']} {scope['path']} ({type(exc).__name__}); "
                "the details are in the server log"
            )
            await answer(send, 500, "InternalError", message)

    async def _bounded(self, scope: Scope, receive: Receive) -> Receive | None:
        """A receive that replays the body read here, or None when the body is too large."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_body_bytes:
                    return None
                return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        return replayed


async def answer(send: Send, status: int, code: str, message: str) -> None:
    """A JSON error in the API's shape; the connection is closed after it."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
