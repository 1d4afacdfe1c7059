"""The key an instance that listens on a network (a Ray node's address) wants on every request.

The data plane makes a secret when it starts. A deployment's key is derived from it and the
deployment's name: the runtime gives the key to the deployment's instances (sealed, on Ray), and
the gateway sends it with every request it forwards to them. A caller on the network without it,
or with another deployment's, is answered 401 before the scoring app sees anything; the header is
taken out of what the app sees. Local instances listen on Unix sockets in private folders instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

HEADER = b"x-flowport-instance-key"

Scope = dict[str, Any]


def derive(secret: bytes, endpoint: str, deployment: str) -> str:
    """The key of one deployment's instances."""
    return hmac.new(secret, json.dumps([endpoint, deployment]).encode(), hashlib.sha256).hexdigest()


class KeyedApp:
    """An ASGI app answering only requests that carry ``key`` in ``HEADER`` (compared in constant time)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = b""
        kept = []
        for name, value in scope["headers"]:
            if name.lower() == HEADER:
                given = value
            else:
                kept.append((name, value))
        if not hmac.compare_digest(given, self.key):
            await _refuse(send)
            return
        await self.app({**scope, "headers": kept}, receive, send)


async def _refuse(send: Any) -> None:
    body = json.dumps(
        {"error": {"code": "Unauthorized", "message": "this instance answers only its deployment's gateway"}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
