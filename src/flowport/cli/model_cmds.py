"""``flowport model ...``: register flow folders as versioned models (Azure's model YAML)."""

from __future__ import annotations

from pathlib import Path

import typer

from flowport.cli.api_client import ApiClient, print_notes
from flowport.cli.endpoint_cmds import (
    FileOption,
    GroupOption,
    SetOption,
    SubscriptionOption,
    WorkspaceOption,
    list_command,
    spec_body,
    version_command,
)
from flowport.cli.output import Output, OutputOption, emit

app = typer.Typer(help="Models: flow folders registered as immutable versions.", no_args_is_help=True)

MODEL_COLUMNS = ["name", "version", "flow_type", "content_hash", "created_at"]


@app.command()
def create(
    file: Path | None = FileOption,
    name: str | None = typer.Option(None, "--name", "-n"),
    version: str | None = typer.Option(None, "--version", "-v", help="Default: the next number."),
    path: Path | None = typer.Option(None, "--path", "-p", help="The flow folder (overrides the file's)."),
    type_: str | None = typer.Option(None, "--type", "-t", help="custom_model (a flow folder)."),
    description: str | None = typer.Option(None, "--description", "-d"),
    stage: str | None = typer.Option(None, "--stage", hidden=True),
    datastore: str | None = typer.Option(None, "--datastore", hidden=True),
    set_: list[str] | None = SetOption,
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
) -> None:
    """Validate a flow folder and register a snapshot of it as a model version."""
    body = spec_body(file, set_)
    flags = {"name": name, "version": version, "type": type_, "stage": stage, "datastore": datastore}
    for key, value in flags.items():
        if value:
            body["set"].append(f"{key}={value}")
    if description is not None:
        body["set"].append(f"description={description}")
        body["force_string"] = True  # az keeps a flag's text as given
    if path is not None:
        body["set"].append(f"path={path.expanduser().resolve()}")
    result = ApiClient.discover().call("POST", "/models", json=body)
    print_notes(result.pop("notes", []))
    emit(result, output)


list_command(app, "models", MODEL_COLUMNS, "List model versions.")


@app.command()
def show(
    name: str = typer.Option(..., "--name", "-n"),
    version: str | None = typer.Option(None, "--version", "-v", help="Default: the newest."),
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
) -> None:
    """Show a model version."""
    params = {"version": version} if version else None
    emit(ApiClient.discover().call("GET", f"/models/{name}", params=params), output)


version_command(
    app,
    "models",
    "archive",
    "POST",
    "/archive",
    "Archive a model version (or all): hidden from list, still usable by existing deployments.",
)
