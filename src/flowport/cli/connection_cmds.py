"""``flowport connection``: connections in the local store, secrets encrypted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flowport.cli.common import connection_service, fail, guarded
from flowport.cli.output import Output, OutputOption, emit
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
    output: Output = OutputOption,
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
    emit(connection.to_dict(), output)


@app.command("list")
@guarded
def list_(output: Output = OutputOption) -> None:
    """List connections, secrets scrubbed."""
    rows = [c.to_dict() for c in connection_service().list()]
    emit(rows, output, _columns(rows))


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """A table's columns: name, type, then every other plain field some connection fills in."""
    columns = ["name", "type"]
    for row in rows:
        columns += [k for k, v in row.items() if k not in columns and v and not isinstance(v, dict | list)]
    return columns


@app.command("show")
@guarded
def show(
    name: str = typer.Option(..., "--name", "-n"),
    show_secrets: bool = typer.Option(False, "--show-secrets", help="Print secret values in clear."),
    output: Output = OutputOption,
) -> None:
    """Show one connection."""
    emit(connection_service().get(name).to_dict(show_secrets=show_secrets), output)


@app.command("delete")
@guarded
def delete(name: str = typer.Option(..., "--name", "-n"), output: Output = OutputOption) -> None:
    """Delete a connection."""
    connection_service().delete(name)
    emit({"deleted": name}, output)
