"""Running a scoring app with uvicorn: on a port or a Unix socket, in one or N processes.

On SIGTERM uvicorn stops accepting, lets in-flight requests finish (up to a deadline) and
exits: what a rolling update needs.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from flowport.http_limits import uvicorn_options

GRACEFUL_SECONDS = 30


def run(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    uds: str | None = None,
    workers: int = 1,
) -> None:
    """Serve ``app`` (an ASGI app, or with ``workers > 1`` the import path of a factory)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "uds": uds,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
        "lifespan": "on",
        "ws": "none",  # no websocket routes: nor the websockets import
        **uvicorn_options(),  # request heads bounded: 431 beyond 64 KiB
    }
    if workers > 1:
        uvicorn.run(app, factory=True, workers=workers, **options)
    else:
        uvicorn.run(app, **options)
