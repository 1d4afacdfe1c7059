"""``flowport server``: the data plane process on the public port, the control plane its child.

Paths under ``/endpoints/`` go to the gateway, ``/metrics`` is the gateway's Prometheus text
(admin token), everything else is relayed to the control plane. The gateway and the runtime
keep running while the control plane is busy, restarting or gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from flowport.connections import load_or_create_key
from flowport.dataplane.agent import Agent
from flowport.dataplane.control_process import ControlProcess
from flowport.dataplane.relay import ControlRelay
from flowport.dataplane.sockets import listen_unix
from flowport.dataplane.wire import TOKEN_ENV
from flowport.gateway import Gateway, TokenSigner, signing_key
from flowport.gateway.app import PREFIX
from flowport.gateway.metrics import CONTENT_TYPE
from flowport.gateway.proxy import RawResponse
from flowport.http_limits import uvicorn_options
from flowport.runtime.base import ComputeTarget, DeploymentFailed, Runtime
from flowport.runtime.local import LocalRuntime
from flowport.runtime.local.isolation import instance_python
from flowport.runtime.router import ComputeRouter
from flowport.settings import SERVER_FILE, admin_token, private_home, run_dir
from flowport.tracing.setup import configure

GATEWAY_TRACES = "gateway.traces.jsonl"

GRACEFUL_SECONDS = 30
DATAPLANE_SOCKET = "dataplane.sock"
CONTROL_SOCKET = "control.sock"


class _QuietServer(uvicorn.Server):
    """A second uvicorn server in the same loop: the public server owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ray_runtime(home: Path, instance_secret: bytes) -> Callable[[ComputeTarget], Runtime]:
    """The factory of a Ray compute's runtime; Ray is imported only when one is used.
    ``instance_secret``: what its instances' keys derive from (the gateway's)."""

    def make(compute: ComputeTarget) -> Runtime:
        try:
            from flowport.runtime.ray import RayRuntime
        except ImportError as exc:
            raise DeploymentFailed(
                f"compute {compute.name!r} is a Ray cluster, but Ray is not installed where "
                f"flowport server runs ({exc}); install it with: pip install 'flowport[ray]'"
            ) from None
        return RayRuntime(compute, home / "runtime" / "ray", instance_secret=instance_secret)

    return make


def public_app(
    gateway: Gateway, relay: ControlRelay, admin: str, trusted_proxies: str = "127.0.0.1"
) -> ASGIApp:
    """The public port's app. Only the relay looks at the client's address and scheme, so only
    it sits behind uvicorn's ``X-Forwarded-*`` handling (from ``trusted_proxies``): the scoring
    path skips that middleware's work (a pass over every header, each request)."""
    expected = admin.encode()
    relayed = ProxyHeadersMiddleware(relay, trusted_hosts=trusted_proxies)

    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        scheme, _, presented = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), expected):
            body = gateway.render_metrics()
            response = RawResponse(body, 200, [(b"content-type", CONTENT_TYPE.encode())])
        else:
            error = b'{"error": {"code": "Unauthorized", "message": "/metrics needs the admin token"}}'
            response = RawResponse(error, 401, [(b"content-type", b"application/json")])
        await response(scope, receive, send)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith(PREFIX):
            await gateway(scope, receive, send)
        elif path == "/metrics":
            await metrics(scope, receive, send)
        else:
            await relayed(scope, receive, send)

    return app


def gateway_traces(home: Path) -> BinaryIO:
    """The built-in trace store's file for the gateway's spans (beside the instances' files)."""
    folder = home / "runtime" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return open(folder / GATEWAY_TRACES, "ab", buffering=0)


async def serve(home: Path, listener: socket.socket, base_url: str) -> int:
    """Serve until SIGTERM or Ctrl-C, then stop the control plane and drain every instance.

    The caller holds the home's lock (``sockets.lock_home``): one server per home. Returns the
    exit code: 1 when the control plane could not start.
    """
    private_home(home)  # and a 0o077 umask for this process and its children
    run = run_dir(home)
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(run, 0o700)
    agent_socket, control_socket = run / DATAPLANE_SOCKET, run / CONTROL_SOCKET

    instance_secret = secrets.token_bytes(32)  # the instances on networks live as long as this process
    gateway = Gateway(
        TokenSigner(signing_key(load_or_create_key(home))),
        data_dir=home / "data",
        instance_secret=instance_secret,
    )
    traces = gateway_traces(home)
    tracing = configure(
        "flowport-gateway", os.environ, builtin=traces, on_drop=gateway.metrics.trace_dropped.inc
    )
    runtime = ComputeRouter(
        LocalRuntime(home / "runtime", python=instance_python()), {"ray": ray_runtime(home, instance_secret)}
    )
    runtime.set_listener(
        lambda key, addresses: gateway.set_instances(key.endpoint, key.deployment, addresses)
    )
    runtime.set_load_source(lambda key: gateway.in_flight(key.endpoint, key.deployment))
    relay = ControlRelay(str(control_socket))
    token = secrets.token_urlsafe(32)
    agent = Agent(gateway, runtime, token)
    options: dict[str, object] = {
        "lifespan": "off",
        "log_level": "warning",
        "access_log": False,
        "ws": "none",
    }
    agent_server = _QuietServer(uvicorn.Config(agent, **options))
    # uvicorn's default, applied to the relay only (public_app)
    trusted_proxies = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    public = uvicorn.Server(
        uvicorn.Config(
            public_app(gateway, relay, admin_token(home), trusted_proxies),
            proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
            **options,
            **uvicorn_options(),
        )
    )

    def give_up() -> None:
        public.should_exit = True

    control = ControlProcess(
        ["--uds", str(control_socket), "--dataplane", str(agent_socket), "--base-url", base_url],
        environment={**os.environ, TOKEN_ENV: token},
        on_give_up=give_up,
    )
    agent_task = asyncio.create_task(agent_server.serve(sockets=[listen_unix(agent_socket)]))
    while not agent_server.started:
        if agent_task.done():
            await agent_task  # it failed to start: say why
        await asyncio.sleep(0.01)
    control.start()
    server_file = home / SERVER_FILE
    server_file.write_text(json.dumps({"url": base_url, "pid": os.getpid()}))
    try:
        await public.serve(sockets=[listener])
    finally:
        await control.stop()
        await agent.close()  # roll-outs under way end before their instances are drained
        await runtime.close()
        await gateway.close()
        agent_server.should_exit = True
        await agent_task
        await relay.aclose()
        if tracing is not None:
            tracing.shutdown()
        traces.close()
        with contextlib.suppress(FileNotFoundError):
            server_file.unlink()
    return 1 if control.gave_up else 0


def run(home: Path, listener: socket.socket, base_url: str) -> int:
    """``serve`` on uvloop when it is installed (as uvicorn would run it): the exit code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(home, listener, base_url))
