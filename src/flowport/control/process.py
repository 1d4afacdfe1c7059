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

import uvicorn

from flowport.control.server import build_control
from flowport.dataplane.client import DataPlaneClient
from flowport.settings import flowport_home

TOKEN_ENV = "FLOWPORT_DATAPLANE_TOKEN"
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
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.uds)  # left by a control plane that was killed
    uvicorn.run(
        built.app,
        uds=args.uds,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        proxy_headers=True,
        forwarded_allow_ips="*",  # only the data plane can reach the socket
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
