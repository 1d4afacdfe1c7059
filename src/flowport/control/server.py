"""``flowport server``: the control plane, the gateway, the local runtime and the studio in one app.

``/api/v1`` is the REST API, ``/endpoints/{name}/...`` the gateway's scoring routes,
``/metrics`` the gateway's Prometheus text (admin token), ``/`` and ``/studio/...`` the studio.
On start the store is migrated, routes are pushed to the gateway and every deployment's
instances start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flowport.connections import Cipher, ConnectionService, load_or_create_key
from flowport.control.api import build_api
from flowport.control.endpoints import ControlPlane
from flowport.control.models import ModelRegistry
from flowport.control.operations import Operations
from flowport.control.sessions import COOKIE, Sessions
from flowport.gateway import Gateway, TokenSigner
from flowport.gateway.app import PREFIX
from flowport.gateway.tokens import DEFAULT_TTL_SECONDS, signing_key
from flowport.runtime.base import Runtime
from flowport.runtime.local import LocalRuntime
from flowport.settings import private_home
from flowport.store import ConnectionRows, Documents, open_database
from flowport.store.tables import deployments, endpoints, models, operations
from flowport.studio import build_studio

log = logging.getLogger("flowport.server")

ADMIN_TOKEN_FILE = "admin_token"
SERVER_FILE = "server.json"
TOKEN_TTL_ENV = "FLOWPORT_TOKEN_TTL_SECONDS"


def admin_token(home: Path) -> str:
    """The admin token, created on first start in a file only its owner can read."""
    env = os.environ.get("FLOWPORT_ADMIN_TOKEN")
    if env:
        return env
    path = home / ADMIN_TOKEN_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


@dataclass
class Server:
    app: ASGIApp
    control: ControlPlane
    gateway: Gateway
    runtime: Runtime
    token: str
    sessions: Sessions


def build_server(home: Path, base_url: str, runtime: Runtime | None = None) -> Server:
    private_home(home)  # and a 0o077 umask for this process and its children
    db = open_database(home)
    secret = load_or_create_key(home)
    cipher = Cipher(secret)
    tokens = TokenSigner(signing_key(secret), int(os.environ.get(TOKEN_TTL_ENV) or DEFAULT_TTL_SECONDS))
    gateway = Gateway(tokens, data_dir=home / "data")
    runtime = runtime or LocalRuntime(home / "runtime")
    control = ControlPlane(
        endpoints=Documents(db, endpoints),
        deployments=Documents(db, deployments),
        operations=Operations(Documents(db, operations)),
        models=ModelRegistry(Documents(db, models), home / "models"),
        connections=ConnectionService(ConnectionRows(db), cipher),
        cipher=cipher,
        tokens=tokens,
        gateway=gateway,
        runtime=runtime,
        base_url=base_url,
    )
    token = admin_token(home)
    sessions = Sessions(token)

    async def metrics(request: Request) -> Response:
        scheme, _, presented = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not sessions.token_matches(presented):
            body = {"error": {"code": "Unauthorized", "message": "/metrics needs the admin token"}}
            return JSONResponse(body, status_code=401)
        return Response(gateway.render_metrics(), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        recovery = asyncio.create_task(control.recover())
        (home / SERVER_FILE).write_text(json.dumps({"url": base_url, "pid": os.getpid()}))
        try:
            yield
        finally:
            recovery.cancel()
            await runtime.close()
            await gateway.close()
            db.dispose()
            with contextlib.suppress(FileNotFoundError):
                (home / SERVER_FILE).unlink()

    api = build_api(control, sessions, home / "data")
    studio = build_studio(lambda request: sessions.get(request.cookies.get(COOKIE)) is not None)
    admin = Starlette(
        routes=[Mount("/api/v1", app=api), Route("/metrics", metrics), *studio], lifespan=lifespan
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """Scoring requests go straight to the gateway; the rest through Starlette's router."""
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await gateway(scope, receive, send)
        else:
            await admin(scope, receive, send)

    return Server(app, control, gateway, runtime, token, sessions)
