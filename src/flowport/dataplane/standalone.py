"""``flowport gateway``: the gateway on its own, its routing table read from files.

Where no control plane pushes routes (a Kubernetes cluster), the gateway reads them from a
mounted ConfigMap (``--routes``: the endpoint's route and each deployment's upstream URLs) and
the endpoint's keys from a mounted Secret (``--keys``: one file per key). It does what it does
in ``flowport server``: key auth, traffic split, pin header, mirroring, 429 pass-through,
Azure's status mapping. An upstream URL's host name is resolved to every address it has (a
headless Service's ready pods) and resolved again every few seconds, so the gateway picks the
least busy pod. The files are read again when they change (a rotated key, a new traffic
split), so a ``kubectl apply`` needs no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from flowport.dataplane.wire import route_from_json
from flowport.gateway import EndpointRoute, Gateway, TokenSigner, key_digest
from flowport.gateway.app import PREFIX
from flowport.gateway.proxy import RawResponse

log = logging.getLogger("flowport.gateway")

RELOAD_SECONDS = 5.0
"""How often the files are checked for a change (the kubelet updates mounted files within a
minute) and the upstreams' names resolved again (pods come and go)."""


class RoutesError(Exception):
    """The routes file or the keys folder cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Routing:
    """One endpoint's route and, per deployment, the addresses the gateway forwards to."""

    route: EndpointRoute
    upstreams: dict[str, list[str]]


def read_keys(directory: Path) -> list[str]:
    """Every key in a mounted Secret's folder: one per file (Kubernetes' ``..data`` entries skipped)."""
    try:
        files = sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        raise RoutesError(f"cannot read the keys folder {directory}: {exc.strerror}") from None
    keys = []
    for path in files:
        try:
            keys.append(path.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise RoutesError(f"cannot read the key file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise RoutesError(f"the key file {path} is not UTF-8 text: put the key itself in it") from None
    return [key for key in keys if key]


def load_routing(routes_file: Path, keys_dir: Path | None) -> Routing:
    """The routing table of ``routes_file`` with the keys of ``keys_dir`` (their digests only)."""
    try:
        data: Any = json.loads(routes_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutesError(f"cannot read the routes file {routes_file}: {exc.strerror}") from None
    except ValueError as exc:
        raise RoutesError(f"{routes_file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("endpoint"), dict):
        raise RoutesError(f"{routes_file} needs an 'endpoint' object (as `--format kubernetes` exports it)")
    try:
        route = route_from_json(data["endpoint"])
    except (TypeError, ValueError, AttributeError) as exc:
        raise RoutesError(f"{routes_file}: the endpoint's route is not valid: {exc}") from None
    if route.auth_mode != "key":
        raise RoutesError(
            f"{routes_file}: endpoint {route.name!r} has auth_mode {route.auth_mode!r}; "
            "a standalone gateway checks keys only (auth_mode key)"
        )
    upstreams = data.get("upstreams") or {}
    if not isinstance(upstreams, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in upstreams.values()
    ):
        raise RoutesError(f"{routes_file}: 'upstreams' must map deployment names to lists of URLs")
    bad = [a for v in upstreams.values() for a in v if not a.startswith(("http://", "https://", "unix:"))]
    if bad:
        raise RoutesError(f"{routes_file}: upstream {bad[0]!r} is not an http://host:port address")
    digests = route.key_digests
    if keys_dir is not None:
        digests += tuple(key_digest(key) for key in read_keys(keys_dir))
    if not digests:
        raise RoutesError(
            f"no key for endpoint {route.name!r}: mount its keys Secret at the --keys folder"
            if keys_dir is not None
            else f"no key for endpoint {route.name!r}: give the folder of its keys with --keys"
        )
    return Routing(replace(route, key_digests=digests), {k: list(v) for k, v in upstreams.items()})


def resolve(url: str) -> list[str]:
    """The instances behind an upstream URL: one ``http://IP:PORT`` per address its host name has.

    A headless Service's name resolves to its ready pods, so the gateway balances over pods (the
    least busy one) and retries on another pod, as it does over local instances. An IP, an
    ``https://`` URL (its certificate names the host) or a Unix socket is used as it is; a name
    that does not resolve (no ready pod) gives none: the gateway answers 503.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme != "http" or not host:
        return [url]
    try:
        ipaddress.ip_address(host)
        return [url]
    except ValueError:
        pass
    port = parts.port or 80
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    ips = sorted({str(info[4][0]) for info in found})
    return [f"http://{f'[{ip}]' if ':' in ip else ip}:{port}" for ip in ips]


class StandaloneGateway:
    """An ASGI app: ``/endpoints/...`` to the gateway, ``/health`` for probes; reloads on change."""

    def __init__(
        self, routes_file: Path, keys_dir: Path | None, reload_seconds: float = RELOAD_SECONDS
    ) -> None:
        self.routes_file = routes_file
        self.keys_dir = keys_dir
        self.reload_seconds = reload_seconds
        # Tokens are never accepted here (key auth only): a random signing key nobody holds.
        self.gateway = Gateway(TokenSigner(secrets.token_bytes(32)))
        self._fingerprint = b""
        self.resolved: dict[str, list[str]] = {}
        """The addresses each deployment's URLs resolved to, last time."""
        self.routing = self.reload()
        self.lifespan_app = Starlette(lifespan=self._lifespan)

    def _files_fingerprint(self) -> bytes:
        digest = hashlib.sha256()
        paths = [self.routes_file]
        if self.keys_dir is not None:
            with contextlib.suppress(OSError):
                paths += sorted(p for p in self.keys_dir.iterdir() if not p.name.startswith("."))
        for path in paths:
            with contextlib.suppress(OSError):
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.digest()

    def reload(self) -> Routing:
        """Read the files and publish them (raises RoutesError; the last good table stays)."""
        fingerprint = self._files_fingerprint()
        routing = load_routing(self.routes_file, self.keys_dir)
        self.gateway.publish(routing.route)
        self._fingerprint = fingerprint
        self.routing = routing
        self.resolved = {}
        self.refresh()
        return routing

    def refresh(self) -> None:
        """Resolve the upstream URLs again; tell the gateway about deployments whose pods changed."""
        routing = self.routing
        for name in set(routing.upstreams) | set(routing.route.deployments):
            addresses = [a for url in routing.upstreams.get(name, []) for a in resolve(url)]
            if self.resolved.get(name) != addresses:
                self.gateway.set_instances(routing.route.name, name, addresses)
                self.resolved[name] = addresses

    def _tick(self) -> None:
        """One check, off the event loop (file reads, DNS): reload changed files, else re-resolve."""
        if self._files_fingerprint() == self._fingerprint:
            self.refresh()
            return
        try:
            routing = self.reload()
        except (RoutesError, OSError) as exc:
            log.error("kept the previous routes: %s", exc)
            return
        log.warning("routes reloaded for endpoint %s", routing.route.name)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_seconds)
            await asyncio.to_thread(self._tick)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.create_task(self._watch())
        async with self.gateway.lifespan_app.router.lifespan_context(app):
            yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.lifespan_app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(PREFIX):
            await self.gateway(scope, receive, send)
            return
        json_type = [(b"content-type", b"application/json")]
        if path == "/health":
            response = RawResponse(b'{"status": "Healthy"}', 200, json_type)
        else:
            body = (
                b'{"error": {"code": "NotFound", "message": "scoring paths are /endpoints/{endpoint}/score"}}'
            )
            response = RawResponse(body, 404, json_type)
        await response(scope, receive, send)
