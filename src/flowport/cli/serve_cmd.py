"""``flowport flow serve``: one flow as a real-time HTTP endpoint (``pf flow serve``'s flags)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from flowport.cli.common import (
    connection_resolver,
    connection_service,
    enter_flow_dir,
    fail,
    guarded,
    parse_pairs,
)
from flowport.flow import FlowDef, load_flow
from flowport.flow.flex import describe_flow_path, is_flex
from flowport.flow.prompty import is_prompty
from flowport.serving.settings import WORKERS_ENV, ServeSettings, SettingsError

if TYPE_CHECKING:
    from flowport.serving import ScoringApp

SOURCE_ENV = "FLOWPORT_SERVE_SOURCE"
VARIABLES_ENV = "FLOWPORT_SERVE_ENVIRONMENT_VARIABLES"


def create_app() -> ScoringApp:
    """Build the app from the environment: the uvicorn factory of each worker process.

    As prompt flow's server does, variables already set in the process win over the flow's
    ``environment_variables``; ``--environment-variables`` win over both.
    """
    from flowport.engine import load_executor
    from flowport.serving import ScoringApp
    from flowport.serving.traced import trace_app

    source = enter_flow_dir(Path(os.environ[SOURCE_ENV]))
    settings = ServeSettings.from_env()
    executor = load_executor(
        source,
        connections=connection_resolver(),
        worker_threads=settings.worker_threads,
        environment_variables=json.loads(os.environ.get(VARIABLES_ENV) or "{}"),
        process_environment_wins=True,
    )
    app = ScoringApp(executor, settings)
    trace_app(app, "flowport-serve")
    return app


@guarded
def serve(
    source: Path = typer.Option(..., "--source", help="The flow folder to serve."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    uds: str | None = typer.Option(None, "--uds", help="Listen on this Unix socket instead of a port."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes (default: PROMPTFLOW_WORKER_NUM or 1)."
    ),
    environment_variables: list[str] | None = typer.Option(
        None, "--environment-variables", help="KEY=value for the flow, over its own and the process's."
    ),
    engine: str | None = typer.Option(None, "--engine", help="Accepted for pf compatibility; ignored."),
    skip_open_browser: bool = typer.Option(
        False, "--skip-open-browser", help="Accepted for pf compatibility."
    ),
    init: list[str] | None = typer.Option(
        None, "--init", help="A flex flow class's __init__ arguments: JSON, a JSON/YAML file, or key=value."
    ),
) -> None:
    """Serve the flow: POST /score, /health, /ready, /swagger.json, /metrics, /feedback."""
    try:
        workers = workers or int(os.environ.get(WORKERS_ENV) or 1)
    except ValueError:
        fail(f"{WORKERS_ENV} must be a whole number")
    source = source.expanduser().resolve()
    os.environ[SOURCE_ENV] = str(source)
    variables = parse_pairs(environment_variables or [], "--environment-variables")
    if init:  # every worker builds the class entry from it, as a deployment's instances do
        from flowport.engine.flex_init import INIT_CONFIG_ENV, parse_init

        os.environ[INIT_CONFIG_ENV] = json.dumps(parse_init(init))
    os.environ[VARIABLES_ENV] = json.dumps(variables)
    where = f"unix:{uds}" if uds else f"http://{host}:{port}"
    try:
        settings = ServeSettings.from_env()
    except SettingsError as exc:
        fail(str(exc))
    reason = describe_flow_path(source)
    if reason is not None:
        fail(reason)
    flow = None if is_flex(source) or is_prompty(source) else load_flow(source)
    if flow is not None and flow.connection_candidates():
        typer.echo(f"serving {flow.name} at {where} ({workers} worker(s)); POST /score", err=True)
        exec_instance(source, flow, variables, settings, host=host, port=port, uds=uds, workers=workers)
    from flowport.serving.server import run

    app = create_app()
    typer.echo(f"serving {app.flow.name} at {where} ({workers} worker(s)); POST /score", err=True)
    if workers > 1:
        run("flowport.cli.serve_cmd:create_app", host=host, port=port, uds=uds, workers=workers)
    else:
        run(app, host=host, port=port, uds=uds)


def exec_instance(
    source: Path,
    flow: FlowDef,
    variables: dict[str, str],
    settings: ServeSettings,
    *,
    host: str,
    port: int,
    uds: str | None,
    workers: int,
) -> NoReturn:
    """Become an instance process that is handed its connections, as deployments run.

    The stored connections the flow may use are read here, then this process execs the
    instance entry point with them on stdin (an anonymous in-memory file): the serving process
    never imports the store's database layer or reads the key file (25 MiB less per worker).

    Unlike a deployment's instance, it keeps the whole environment and the user: it is the
    user's own process running the user's own flow, which could read their files anyway, and
    as with ``pf flow serve`` the shell's variables feed the flow (``docs/security.md``).
    """
    from flowport.runtime.base import InstanceConfig

    names = flow.connection_candidates() | set(os.environ.values()) | set(variables.values())
    config = InstanceConfig(
        source=str(source),
        environment_variables=variables,
        connections=connection_service().handover(names),
        max_concurrent_requests=settings.max_concurrent_requests,
        request_timeout_ms=settings.request_timeout_ms,
    )
    handle = os.memfd_create("flowport-instance") if hasattr(os, "memfd_create") else _anonymous_file()
    os.write(handle, json.dumps(config.to_json()).encode())
    os.lseek(handle, 0, os.SEEK_SET)
    os.dup2(handle, 0)
    os.environ[WORKERS_ENV] = str(workers)
    where = ["--uds", uds] if uds else ["--host", host, "--port", str(port)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "flowport.runtime.instance", *where])


def _anonymous_file() -> int:
    import tempfile

    return os.dup(tempfile.TemporaryFile().fileno())
