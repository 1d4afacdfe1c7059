"""The control plane process's app: the REST API at ``/api/v1`` and the studio.

It runs as a child of the data plane (``flowport server``), which owns the public port and
relays these paths here over a Unix socket. On start the store is migrated and the control
plane reconciles the data plane with the store (``ControlPlane.recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from flowport.connections import Cipher, ConnectionService, load_or_create_key
from flowport.control.api import build_api
from flowport.control.computes import Computes
from flowport.control.endpoints import ControlPlane
from flowport.control.environments import EnvironmentRegistry
from flowport.control.models import ModelRegistry
from flowport.control.operations import Operations
from flowport.control.sessions import COOKIE, Sessions
from flowport.control.traces import TraceStore
from flowport.dataplane.client import DataPlaneClient
from flowport.gateway import TokenSigner
from flowport.gateway.tokens import DEFAULT_TTL_SECONDS, signing_key
from flowport.settings import admin_token, instance_log_dirs, private_home
from flowport.store import ConnectionRows, Documents, open_database
from flowport.store.tables import computes, deployments, endpoints, environments, models, operations
from flowport.studio import build_studio

TOKEN_TTL_ENV = "FLOWPORT_TOKEN_TTL_SECONDS"
log = logging.getLogger("flowport.control")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("recovery after start failed", exc_info=task.exception())


def token_signer(secret: bytes) -> TokenSigner:
    return TokenSigner(signing_key(secret), int(os.environ.get(TOKEN_TTL_ENV) or DEFAULT_TTL_SECONDS))


@dataclass
class ControlServer:
    app: ASGIApp
    control: ControlPlane
    sessions: Sessions


def build_control(home: Path, base_url: str, dataplane: DataPlaneClient) -> ControlServer:
    private_home(home)  # and a 0o077 umask for this process and its children
    db = open_database(home)
    secret = load_or_create_key(home)
    cipher = Cipher(secret)
    endpoint_rows = Documents(db, endpoints)
    control = ControlPlane(
        endpoints=endpoint_rows,
        computes=Computes(Documents(db, computes), endpoint_rows),
        deployments=Documents(db, deployments),
        operations=Operations(Documents(db, operations)),
        models=ModelRegistry(Documents(db, models), home / "models"),
        environments=EnvironmentRegistry(Documents(db, environments), home / "environments"),
        connections=ConnectionService(ConnectionRows(db), cipher),
        cipher=cipher,
        tokens=token_signer(secret),
        dataplane=dataplane,
        base_url=base_url,
    )
    sessions = Sessions(admin_token(home))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        recovery = asyncio.create_task(control.recover())
        recovery.add_done_callback(_log_failure)
        try:
            yield
        finally:
            recovery.cancel()
            await dataplane.aclose()
            db.dispose()

    local_logs, *other_logs = instance_log_dirs(home)
    api = build_api(control, sessions, home / "data", base_url, TraceStore(local_logs, also=other_logs))
    studio = build_studio(lambda request: sessions.get(request.cookies.get(COOKIE)) is not None)
    app = Starlette(routes=[Mount("/api/v1", app=api), *studio], lifespan=lifespan)
    return ControlServer(app, control, sessions)
