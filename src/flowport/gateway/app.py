"""The gateway: the endpoint router in front of every deployment's instances.

Per request: find the endpoint, check the key or token, pick a deployment (pin header or
traffic split, mirroring a copy), admit it under the deployment's in-flight limit, forward
the body to the least busy ready instance and relay the answer. The routing table lives in
memory; the control plane and the runtime push changes with ``publish``, ``withdraw`` and
``set_instances``, which may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from flowport import instance_keys, tracing
from flowport.gateway import errors
from flowport.gateway.auth import authorize
from flowport.gateway.collector import DataCollector, Record
from flowport.gateway.compare import Comparisons, Side
from flowport.gateway.errors import Refusal, error_response
from flowport.gateway.headers import (
    PIN_HEADERS,
    TRACEPARENT,
    Headers,
    downstream_headers,
    upstream_headers,
)
from flowport.gateway.metrics import UNKNOWN, GatewayMetrics
from flowport.gateway.mirror import Mirror
from flowport.gateway.proxy import PASSED_THROUGH, StreamedResponse, failed_dependency, open_upstream
from flowport.gateway.routes import DataCollection, DeploymentRoute, EndpointRoute
from flowport.gateway.stats import MINUTES
from flowport.gateway.table import DeploymentState, EndpointTable
from flowport.gateway.tokens import TokenSigner
from flowport.gateway.upstream import Upstream
from flowport.instance_keys import derive
from flowport.request_ids import client_request_id
from flowport.request_ids import request_id as accepted_request_id
from flowport.tracing.propagation import parse as parse_traceparent
from flowport.tracing.propagation import traceparent
from flowport.transport import TransportError, UpstreamResponse

log = logging.getLogger("flowport.gateway")

MAX_BODY_BYTES = 32 * 1024 * 1024
PREFIX = "/endpoints/"
"""Every gateway path starts so: ``/endpoints/{endpoint}/{route}``."""


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    """A route of every endpoint: the instance path it forwards to."""

    path: str
    method: str
    scoring: bool
    """Carries a body to forward (and maybe mirror and collect)."""


ROUTES = {
    "score": GatewayRoute("/score", "POST", scoring=True),
    "swagger.json": GatewayRoute("/swagger.json", "GET", scoring=False),
    "v1/chat/completions": GatewayRoute("/v1/chat/completions", "POST", scoring=True),
}


AUTHORIZED = "flowport.endpoint"
"""Set on a request's span once its caller is authorized: a request refused before that (a wrong
path, no such endpoint, no valid key) is never exported, since anyone can send those and the
built-in store keeps a bounded number of traces."""


def _end_span(span: Any, status: int, reply: dict[str, str]) -> None:
    """Close a request's span with its answer: the status, the ids and deployment it carried."""
    span.set_attribute("http.response.status_code", status)
    if "x-request-id" in reply:
        span.set_attribute("flowport.request_id", reply["x-request-id"])
    if "azureml-model-deployment" in reply:
        span.set_attribute("flowport.deployment", reply["azureml-model-deployment"])
    if status >= 500 or status == 424:
        tracing.fail(span, None, f"HTTP {status}")
    span.end()


def _finish_unrecorded(request: tracing.Unrecorded, scope: Scope, status: int, reply: dict[str, str]) -> None:
    """A request the sampler passed over becomes a span after all when ``_end_span`` would have
    kept one (424, 5xx, another 4xx), or when it was slow; never one refused before its caller was
    authorized (anyone can send those)."""
    if status in _REFUSED_UNAUTHORIZED:
        return
    error = f"HTTP {status}" if status >= 500 or status == 424 else None

    def attributes() -> dict[str, Any]:
        found = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "http.response.status_code": status,
            "flowport.request_id": reply.get("x-request-id"),
        }
        parts = scope["path"].split("/")
        if len(parts) > 2 and parts[1] == "endpoints":
            found[AUTHORIZED] = parts[2]
        if "azureml-model-deployment" in reply:
            found["flowport.deployment"] = reply["azureml-model-deployment"]
        return found

    request.finish(tracing.SERVER, attributes, error, keep=status >= 400)


_REFUSED_UNAUTHORIZED = frozenset({401, 403, 404, 405, 429})
"""Answers a caller gets before it is authorized, or when the server is overloaded: no trace."""


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def first_values(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """ASGI's header pairs (names already lower case) as a dict of each name's first value."""
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        if name not in found:
            found[name] = value
    return found


@dataclass(slots=True)
class Exchange:
    """One admitted request, from the moment an instance was chosen to its last byte."""

    state: DeploymentState
    upstream: Upstream
    request_id: str
    started: float
    body: bytes | None
    collect: DataCollection | None
    ticket: int | None = None
    """Set when mirrors answered the same request: the comparison waiting for this answer."""
    events: bool = False
    span: Any = None
    """The request's trace span (while tracing): it ends with the answer."""


class Gateway:
    """The endpoint router, an ASGI app for the paths under ``/endpoints/``."""

    def __init__(
        self,
        tokens: TokenSigner,
        *,
        data_dir: Path | None = None,
        timeout_grace_seconds: float = 5.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        mirror_limit: int = 64,
        instance_secret: bytes | None = None,
    ) -> None:
        self.tokens = tokens
        self.instance_secret = instance_secret
        """Set: requests to instances on a network address carry their deployment's key
        (``instance_keys.py``); the runtime derives the same from it."""
        self.timeout_grace_seconds = timeout_grace_seconds
        """The gateway gives an instance request_timeout_ms plus this before answering 408."""
        self.max_body_bytes = max_body_bytes
        self.metrics = GatewayMetrics()
        self.mirror = Mirror(self.metrics, mirror_limit, timeout_grace_seconds)
        self.collector = (
            DataCollector(
                Path(data_dir),
                on_drop=lambda reason: self.metrics.child(self.metrics.collection_dropped, reason).inc(),
                on_written=self.metrics.collection_written.inc,
            )
            if data_dir is not None
            else None
        )
        self.comparisons = Comparisons(
            on_drop=lambda reason: self.metrics.child(self.metrics.compare_dropped, reason).inc(),
            on_recorded=self.metrics.compare_recorded.inc,
        )
        self._tables: dict[str, EndpointTable] = {}
        self._states: dict[tuple[str, str], DeploymentState] = {}
        self._upstreams: set[Upstream] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lifespan_app = Starlette(lifespan=self._lifespan)
        """Starts and stops the gateway when it is served on its own (the server has its own lifespan)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Raw ASGI: the data plane skips routers and middleware, it is the hot path."""
        if scope["type"] != "http":
            await self.lifespan_app(scope, receive, send)
            return
        reply: dict[str, str] = {}
        try:
            response = await self.handle(scope, receive, reply)
        except ClientGone:
            return
        except Exception:
            # A bug, not the client's doing: a JSON 500 that closes the connection, whose state is unknown.
            log.exception("the gateway failed to answer %s %s", scope["method"], scope["path"])
            ids = {name: value for name, value in reply.items() if name != "azureml-model-deployment"}
            response = error_response(errors.internal_error(), {**ids, "connection": "close"})
        await response(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        yield
        await self.close()

    # -- the routing table ----------------------------------------------------------

    def publish(self, route: EndpointRoute) -> None:
        """Add or replace an endpoint's route: keys, traffic, mirror and deployments."""
        with self._lock:
            states = {name: self._state(route.name, name) for name in EndpointTable.names(route)}
            for name, state in states.items():
                state.settings = route.deployments.get(name) or DeploymentRoute(name)
            self._tables[route.name] = EndpointTable(route, states)
            gone = [
                key
                for key, state in self._states.items()
                if key[0] == route.name and key[1] not in states and not state.pool.active
            ]
            for key in gone:
                self._drop(key)

    def withdraw(self, endpoint: str) -> None:
        """The endpoint was deleted: stop serving it and close its instances' connections."""
        with self._lock:
            self._tables.pop(endpoint, None)
            for key in [key for key in self._states if key[0] == endpoint]:
                self._drop(key)
        self.metrics.forget(endpoint)
        self.comparisons.forget(endpoint)

    def set_instances(self, endpoint: str, deployment: str, addresses: list[str]) -> None:
        """The ready instances of a deployment (``unix:/path.sock`` or ``http://host:port``).

        A removed address is never picked again; its connections close once its requests finish.
        """
        with self._lock:
            key = (endpoint, deployment)
            if not addresses and key not in self._states:
                return
            self._state(endpoint, deployment).pool.update(addresses)
            table = self._tables.get(endpoint)
            if not addresses and (table is None or deployment not in table.deployments):
                self._drop(key)  # neither routed nor running: a deleted or failed deployment

    def _drop(self, key: tuple[str, str]) -> None:
        """Forget a deployment the gateway no longer routes to: instances, last hour, series."""
        state = self._states.pop(key)
        state.live = False
        state.pool.retire_all()
        self.metrics.forget(*key)

    def _state(self, endpoint: str, deployment: str) -> DeploymentState:
        state = self._states.get((endpoint, deployment))
        if state is None:
            new_upstream = partial(self._new_upstream, endpoint, deployment)
            state = DeploymentState(endpoint, deployment, self._on_idle, new_upstream)
            self._states[(endpoint, deployment)] = state
        return state

    def _new_upstream(self, endpoint: str, deployment: str, address: str) -> Upstream:
        """An instance's upstream; one on a network address gets its deployment's key on every request."""
        fixed = []
        if self.instance_secret is not None and not address.startswith("unix:"):
            fixed.append((instance_keys.HEADER, derive(self.instance_secret, endpoint, deployment).encode()))
        upstream = Upstream(address, fixed)
        self._upstreams.add(upstream)
        return upstream

    def _on_idle(self, upstream: Upstream) -> None:
        """A withdrawn instance has nothing outstanding: close its connections on the gateway's loop."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop or running
        if loop is None or loop.is_closed():
            # Never used on a loop, so nothing is open.
            self._upstreams.discard(upstream)
            upstream.closed = True
        elif loop is running:
            self._spawn(self._close_idle(upstream))
        else:
            loop.call_soon_threadsafe(self._spawn, self._close_idle(upstream))

    async def _close_idle(self, upstream: Upstream) -> None:
        if upstream.closed or upstream.outstanding:  # a request picked it just before it was withdrawn
            return
        upstream.closed = True
        self._upstreams.discard(upstream)
        await upstream.transport.aclose()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests -----------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, reply: dict[str, str]) -> Response:
        """The answer to one request (raises ClientGone if the client left mid-body).

        ``reply`` gets the headers every answer carries (request ids, then the deployment).
        While tracing, the request is a span (a child of the client's ``traceparent``) that the
        instance's spans continue; it ends with the answer.
        """
        if not tracing.enabled():
            return await self._handle(scope, receive, reply, None)
        client = next((value for name, value in scope["headers"] if name == TRACEPARENT), None)
        span = tracing.begin(
            f"{scope['method']} {scope['path']}",
            {"http.request.method": scope["method"], "url.path": scope["path"]},
            tracing.SERVER,
            parse_traceparent(client),
            edge=True,
        )
        if span is None:
            return await self._handle(scope, receive, reply, None)
        reply["traceparent"] = traceparent(span)
        if type(span) is tracing.Unrecorded:
            try:
                response = await self._handle(scope, receive, reply, None)
            except ClientGone:
                raise
            except BaseException as exc:  # kept, as a recorded request's span is
                span.finish(
                    tracing.SERVER, lambda: {"url.path": scope["path"]}, f"{type(exc).__name__}: {exc}"
                )
                raise
            _finish_unrecorded(span, scope, response.status_code, reply)
            return response
        holder = [span]
        try:
            response = await self._handle(scope, receive, reply, holder)
        except BaseException as exc:
            tracing.fail(span, exc)
            span.end()
            raise
        if holder[0] is not None and AUTHORIZED in span.attributes:  # refused: no exchange took it
            _end_span(span, response.status_code, reply)
        return response

    async def _handle(
        self, scope: Scope, receive: Receive, reply: dict[str, str], span: list[Any] | None
    ) -> Response:
        started = time.perf_counter()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        headers = first_values(scope["headers"])
        request_id = accepted_request_id((headers.get(b"x-request-id") or b"").decode("latin-1"))
        reply["x-request-id"] = request_id
        client_id = client_request_id((headers.get(b"x-ms-client-request-id") or b"").decode("latin-1"))
        if client_id:
            reply["x-ms-client-request-id"] = client_id

        path: str = scope["path"]
        endpoint, _, tail = path.removeprefix(PREFIX).partition("/")
        route = ROUTES.get(tail) if path.startswith(PREFIX) and endpoint else None
        if route is None:
            return error_response(errors.route_not_found(path), reply)
        if scope["method"] != route.method:
            return error_response(errors.method_not_allowed(scope["method"], route.method), reply)

        table = self._tables.get(endpoint)
        if table is None:
            return self._refuse(UNKNOWN, None, errors.endpoint_not_found(endpoint), reply, started)
        authorization = headers.get(b"authorization")
        credential = authorization.decode("latin-1") if authorization is not None else None
        refusal = authorize(table.route, credential, self.tokens)
        if refusal is not None:
            return self._refuse(endpoint, None, refusal, reply, started)
        if span is not None:
            span[0].set_attribute(AUTHORIZED, endpoint)
        pin = headers.get(PIN_HEADERS[0]) or headers.get(PIN_HEADERS[1])
        pinned = pin.decode("latin-1") if pin else None
        state = self._choose(table, pinned)
        if isinstance(state, Refusal):
            return self._refuse(endpoint, None, state, reply, started)
        reply["azureml-model-deployment"] = state.name

        settings = state.settings
        if state.in_flight >= settings.max_in_flight:
            refusal = errors.too_many_requests(state.name, settings.max_in_flight)
            return self._refuse(endpoint, state, refusal, reply, started)
        state.in_flight += 1
        ticket = None
        try:
            body = await self._read_body(receive, headers.get(b"content-length")) if route.scoring else None
            forwarded = upstream_headers(scope["headers"], request_id, client_id, reply.get("traceparent"))
            if body is not None and not pinned and table.mirrors:
                ticket = self._mirror(
                    state, table.mirror_targets(), route.path, forwarded, body, request_id, credential
                )
            timeout = settings.request_timeout_ms / 1000 + self.timeout_grace_seconds
            response, upstream = await open_upstream(
                state, route.method, route.path.encode(), forwarded, body, timeout, self._count_retry
            )
        except Refusal as refused:
            state.in_flight -= 1
            self.comparisons.cancel(ticket)
            return self._refuse(endpoint, state, refused, reply, started)
        except BaseException:
            state.in_flight -= 1
            self.comparisons.cancel(ticket)
            raise

        collect = self._sampled(settings.data_collection) if route.scoring else None
        exchange = Exchange(state, upstream, request_id, started, body, collect, ticket=ticket)
        if span is not None:
            exchange.span, span[0] = span[0], None
            exchange.span.set_attribute("server.address", upstream.address)
        return await self._answer(exchange, response, reply)

    def _mirror(
        self,
        state: DeploymentState,
        targets: list[DeploymentState],
        path: str,
        forwarded: Headers,
        body: bytes,
        request_id: str,
        credential: str | None,
    ) -> int | None:
        """Send the copies; the ticket of the comparison that waits for their answers, if any."""
        if not targets:
            return None
        secrets = (credential, credential.partition(" ")[2]) if credential else ()
        names = [target.name for target in targets]
        ticket = self.comparisons.expect(state.endpoint, state.name, names, request_id, body, secrets)
        answered = partial(self.comparisons.answered, ticket)
        for target in targets:
            if not self.mirror.copy(target, path, forwarded, body, answered):
                answered(Side(target.name, 0, 0.0, b""))
        return ticket

    @staticmethod
    def _choose(table: EndpointTable, pinned: str | None) -> DeploymentState | Refusal:
        """The pinned deployment (traffic or not), else one drawn by the traffic split."""
        if pinned:
            state = table.deployments.get(pinned)
            if state is None:
                return errors.deployment_not_found(table.route.name, pinned, list(table.deployments))
            return state
        return table.pick() or errors.no_traffic(table.route.name)

    async def _answer(
        self, exchange: Exchange, response: UpstreamResponse, reply: dict[str, str]
    ) -> Response:
        """Relay 2xx, 408 and 429 as they stream; turn any other status into Azure's 424."""
        state, collect = exchange.state, exchange.collect
        done = partial(self._finish, exchange)
        returned = downstream_headers(
            response.headers, exchange.request_id, state.name, reply.get("traceparent")
        )
        status = response.status_code
        if 200 <= status < 300 or status in PASSED_THROUGH:
            exchange.events = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
            capture = (collect is not None and collect.response) or exchange.ticket is not None
            return StreamedResponse(response, returned, done, capture, watch=exchange.events)
        try:
            error_body = await response.aread()
        except BaseException as exc:
            done(502, None, False)
            if isinstance(exc, TransportError):
                return error_response(errors.bad_gateway(state.name), reply)
            raise
        finally:
            await response.aclose()
        done(424, error_body, False)
        return failed_dependency(status, error_body, returned)

    async def _read_body(self, receive: Receive, declared: bytes | None) -> bytes:
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise errors.body_too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise errors.body_too_large(self.max_body_bytes)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _sampled(self, collection: DataCollection | None) -> DataCollection | None:
        if (
            self.collector is None
            or collection is None
            or not (collection.request or collection.response)
            or random.random() >= collection.sampling_rate
        ):
            return None
        return collection

    # -- bookkeeping --------------------------------------------------------------

    def _refuse(
        self,
        endpoint: str,
        state: DeploymentState | None,
        refusal: Refusal,
        reply: dict[str, str],
        started: float,
    ) -> Response:
        self._count(endpoint, state, refusal.status, time.perf_counter() - started)
        return error_response(refusal, reply)

    def _count(self, endpoint: str, state: DeploymentState | None, status: int, elapsed: float) -> None:
        """Count an answer under labels the control plane published, never a caller's name."""
        metrics = self.metrics
        if state is not None and state.live:
            state.stats.record(status, elapsed)
            series = state.series.get(status)
            if series is None:  # looked up once per status: the state goes (not live) with its series
                requests = metrics.child(metrics.requests, state.endpoint, state.name, str(status))
                latency = metrics.child(metrics.latency, state.endpoint, state.name)
                series = state.series[status] = (requests, latency)
            series[0].inc()
            series[1].observe(elapsed)
            return
        # before a deployment was chosen, or one withdrawn while the request ran
        if endpoint not in self._tables:
            endpoint = UNKNOWN
        metrics.child(metrics.requests, endpoint, "", str(status)).inc()
        metrics.child(metrics.latency, endpoint, "").observe(elapsed)

    def _count_retry(self, state: DeploymentState) -> None:
        if state.live:
            self.metrics.child(self.metrics.retries, state.endpoint, state.name).inc()

    def _finish(self, exchange: Exchange, status: int, captured: bytes | None, truncated: bool) -> None:
        """The answer is over (sent, failed or abandoned): release, count, maybe collect."""
        state = exchange.state
        state.in_flight -= 1
        state.pool.release(exchange.upstream)
        elapsed = time.perf_counter() - exchange.started
        self._count(state.endpoint, state, status, elapsed)
        if exchange.ticket is not None:
            side = Side(state.name, status, elapsed * 1000, captured or b"", exchange.events, truncated)
            self.comparisons.answered(exchange.ticket, side)
        if exchange.span is not None:
            exchange.span.set_attribute("flowport.deployment", state.name)
            _end_span(exchange.span, status, {"x-request-id": exchange.request_id})
        collect = exchange.collect
        if collect is not None and self.collector is not None:
            self.collector.submit(
                Record(
                    request_id=exchange.request_id,
                    endpoint=state.endpoint,
                    deployment=state.name,
                    time=time.time() - elapsed,
                    status=status,
                    latency_ms=elapsed * 1000,
                    rolling_rate=collect.rolling_rate,
                    request=exchange.body if collect.request else None,
                    response=(captured if captured is not None else b"") if collect.response else None,
                    response_is_events=exchange.events,
                    response_truncated=truncated,
                )
            )

    # -- what the server shows ----------------------------------------------------

    def render_metrics(self) -> bytes:
        """Prometheus text of the gateway's own registry."""
        metrics = self.metrics
        for state in list(self._states.values()):
            if state.live:
                metrics.child(metrics.in_flight, state.endpoint, state.name).set(state.in_flight)
        return metrics.render()

    def in_flight(self, endpoint: str, deployment: str) -> dict[str, int]:
        """Requests outstanding per ready instance address of a deployment (what autoscaling samples)."""
        state = self._states.get((endpoint, deployment))
        return {u.address: u.outstanding for u in state.pool.active} if state is not None else {}

    def stats(self, endpoint: str) -> dict[str, Any]:
        """The last 60 minutes of each deployment of ``endpoint``, one entry per minute."""
        now = time.time()
        table = self._tables.get(endpoint)
        names = list(table.deployments) if table is not None else []
        names += [name for (ep, name) in list(self._states) if ep == endpoint and name not in names]
        deployments = {}
        for name in names:
            state = self._states.get((endpoint, name))
            if state is not None:
                deployments[name] = state.stats.series(now)
        return {"endpoint": endpoint, "minutes": MINUTES, "deployments": deployments}

    async def close(self) -> None:
        """Stop mirroring, close every instance connection and write what data collection queued."""
        await self.mirror.close()
        for upstream in list(self._upstreams):
            if not upstream.closed:
                upstream.closed = True
                await upstream.transport.aclose()
        self._upstreams.clear()
        if self.collector is not None:
            await asyncio.to_thread(self.collector.close)
        await asyncio.to_thread(self.comparisons.close)
