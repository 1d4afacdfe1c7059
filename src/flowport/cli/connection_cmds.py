"""``flowport connection``: connections in the local store, secrets encrypted."""

from __future__ import annotations

from pathlib import Path

import typer

from flowport.cli.common import connection_service, fail, guarded, print_json
from flowport.connections import apply_set, connection_from_spec
from flowport.flow.errors import FlowError
from flowport.flow.yaml import load_yaml_file

app = typer.Typer(help="Manage connections (API keys and endpoints used by flows).", no_args_is_help=True)


@app.command("create")
@guarded
def create(
    file: Path = typer.Option(..., "--file", "-f", help="Connection YAML in prompt flow's shape."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a field: key=value."),
    name: str | None = typer.Option(None, "--name", "-n", help="Use this name instead of the file's."),
) -> None:
    """Create or update a connection from a YAML file. Prints it with secrets scrubbed."""
    try:
        spec = load_yaml_file(file)
    except FlowError as exc:
        fail(exc.message)
    if not isinstance(spec, dict):
        fail(f"{file} must hold a YAML mapping with name and type")
    spec = apply_set(dict(spec), set_ or [])
    if name:
        spec["name"] = name
    connection = connection_service().save(connection_from_spec(spec))
    print_json(connection.to_dict())


@app.command("list")
@guarded
def list_() -> None:
    """List connections, secrets scrubbed."""
    print_json([c.to_dict() for c in connection_service().list()])


@app.command("show")
@guarded
def show(
    name: str = typer.Option(..., "--name", "-n"),
    show_secrets: bool = typer.Option(False, "--show-secrets", help="Print secret values in clear."),
) -> None:
    """Show one connection."""
    print_json(connection_service().get(name).to_dict(show_secrets=show_secrets))


@app.command("delete")
@guarded
def delete(name: str = typer.Option(..., "--name", "-n")) -> None:
    """Delete a connection."""
    connection_service().delete(name)
    print_json({"deleted": name})
