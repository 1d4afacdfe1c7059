"""``flowport gateway``: the endpoint gateway alone, its routes and keys read from files."""

from __future__ import annotations

from pathlib import Path

import typer

from flowport.cli.common import fail


def gateway(
    routes: Path = typer.Option(
        ..., "--routes", help="The routing table (routes.json of an `export --format kubernetes`)."
    ),
    keys: Path | None = typer.Option(
        None, "--keys", help="Folder with the endpoint's keys, one per file (its mounted Secret)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    reload_seconds: float = typer.Option(
        5.0, "--reload-seconds", min=0.05, help="How often the files are checked for changes."
    ),
) -> None:
    """Serve one endpoint (key auth, traffic split, mirror) in front of its deployments' URLs."""
    from flowport.dataplane.standalone import RoutesError, StandaloneGateway
    from flowport.serving.server import run

    try:
        app = StandaloneGateway(routes, keys, reload_seconds)
    except RoutesError as exc:
        fail(str(exc))
    route = app.routing.route
    typer.echo(
        f"gateway for endpoint {route.name} at http://{host}:{port}/endpoints/{route.name}/score "
        f"({len(route.deployments)} deployment(s))",
        err=True,
    )
    run(app, host=host, port=port)
