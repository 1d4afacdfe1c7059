"""``python -m flowport.control.process``: the control plane, serving on a Unix socket.

Started (and restarted) by the data plane, which relays the public REST API and studio
paths to it. The data plane's private socket and its token come as arguments and
``FLOWPORT_DATAPLANE_TOKEN``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from flowport.control.server import build_control
from flowport.dataplane.client import DataPlaneClient
from flowport.dataplane.sockets import listen_unix
from flowport.dataplane.wire import TOKEN_ENV
from flowport.settings import flowport_home

NICENESS = 10
"""The control plane yields the CPU to the data plane: scoring first, administration after."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowport.control.process")
    parser.add_argument("--uds", required=True, help="the Unix socket to serve on")
    parser.add_argument("--dataplane", required=True, help="the data plane's private socket")
    parser.add_argument("--base-url", required=True, help="the server's public URL")
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    home = flowport_home()
    client = DataPlaneClient(args.dataplane, os.environ.pop(TOKEN_ENV, ""))
    built = build_control(home, args.base_url, client)
    link = f"{args.base_url}/api/v1/sessions/redeem?code={built.sessions.login_code()}"
    print(f"  sign in to the studio with this one-time link (10 minutes):\n    {link}", file=sys.stderr)
    config = uvicorn.Config(
        ForwardedHost(built.app),
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        proxy_headers=True,
        forwarded_allow_ips="*",  # only the data plane can reach the socket
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=[listen_unix(Path(args.uds))])


class ForwardedHost:
    """The client's ``Host``, which the data plane's relay passes as ``x-forwarded-host``.

    Redirects and URLs the control plane builds then name the server as the client reached it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-host"]
            if forwarded:
                headers = [(n, v) for n, v in scope["headers"] if n not in (b"host", b"x-forwarded-host")]
                scope = {**scope, "headers": [(b"host", forwarded[0]), *headers]}
        await self.app(scope, receive, send)


if __name__ == "__main__":
    main()
