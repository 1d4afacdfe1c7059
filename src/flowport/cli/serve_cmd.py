"""``flowport flow serve``: one flow as a real-time HTTP endpoint (``pf flow serve``'s flags)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from flowport.cli.common import connection_resolver, enter_flow_dir, fail, guarded, parse_pairs
from flowport.engine import FlowExecutor
from flowport.serving import ScoringApp, ServeSettings, SettingsError
from flowport.serving.server import run

SOURCE_ENV = "FLOWPORT_SERVE_SOURCE"
VARIABLES_ENV = "FLOWPORT_SERVE_ENVIRONMENT_VARIABLES"
WORKERS_ENV = "PROMPTFLOW_WORKER_NUM"


def create_app() -> ScoringApp:
    """Build the app from the environment: the uvicorn factory of each worker process.

    As prompt flow's server does, variables already set in the process win over the flow's
    ``environment_variables``; ``--environment-variables`` win over both.
    """
    source = enter_flow_dir(Path(os.environ[SOURCE_ENV]))
    settings = ServeSettings.from_env()
    executor = FlowExecutor.load(
        source,
        connections=connection_resolver(),
        worker_threads=settings.worker_threads,
        environment_variables=json.loads(os.environ.get(VARIABLES_ENV) or "{}"),
        process_environment_wins=True,
    )
    return ScoringApp(executor, settings)


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
) -> None:
    """Serve the flow: POST /score, /health, /ready, /swagger.json, /metrics, /feedback."""
    try:
        workers = workers or int(os.environ.get(WORKERS_ENV) or 1)
    except ValueError:
        fail(f"{WORKERS_ENV} must be a whole number")
    os.environ[SOURCE_ENV] = str(source.expanduser().resolve())
    variables = parse_pairs(environment_variables or [], "--environment-variables")
    os.environ[VARIABLES_ENV] = json.dumps(variables)
    try:
        app = create_app()
    except SettingsError as exc:
        fail(str(exc))
    where = f"unix:{uds}" if uds else f"http://{host}:{port}"
    typer.echo(f"serving {app.flow.name} at {where} ({workers} worker(s)); POST /score", err=True)
    if workers > 1:
        run("flowport.cli.serve_cmd:create_app", host=host, port=port, uds=uds, workers=workers)
    else:
        run(app, host=host, port=port, uds=uds)
