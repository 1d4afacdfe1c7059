"""``flowport compute ...``: where an endpoint's deployments run (``az ml compute``'s verbs)."""

from __future__ import annotations

from pathlib import Path

import typer

from flowport.cli.api_client import ApiClient, print_notes
from flowport.cli.endpoint_cmds import FileOption, GroupOption, SetOption, WorkspaceOption, confirm, spec_body
from flowport.cli.output import Output, OutputOption, emit

app = typer.Typer(
    help="Compute targets: local (built in), a Ray cluster, or a Kubernetes cluster.", no_args_is_help=True
)

COMPUTE_COLUMNS = ["name", "type", "address", "namespace", "description"]


@app.command()
def create(
    file: Path | None = FileOption,
    name: str | None = typer.Option(None, "--name", "-n", help="Compute name (overrides the file's)."),
    type_: str | None = typer.Option(None, "--type", "-t", help="ray or kubernetes."),
    address: str | None = typer.Option(None, "--address", help="ray: the head's HOST:PORT (or ray://...)."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help="kubernetes: the kubeconfig file."),
    context: str | None = typer.Option(None, "--context", help="kubernetes: the kubeconfig context."),
    namespace: str | None = typer.Option(None, "--namespace", help="kubernetes: the namespace."),
    description: str | None = typer.Option(None, "--description"),
    set_: list[str] | None = SetOption,
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
) -> None:
    """Register a compute; an endpoint runs on it with `compute: azureml:NAME`."""
    body = spec_body(file, set_)
    if kubeconfig:
        kubeconfig = str(Path(kubeconfig).expanduser().resolve())
    flags = {
        "name": name,
        "type": type_,
        "address": address,
        "kubeconfig": kubeconfig,
        "context": context,
        "namespace": namespace,
        "description": description,
    }
    body["set"] += [f"{key}={value}" for key, value in flags.items() if value is not None]
    result = ApiClient.discover().call("POST", "/computes", json=body)
    print_notes(result.pop("notes", []))
    emit(result, output)


@app.command("list")
def list_(
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
) -> None:
    """List the computes (``local`` is always there)."""
    emit(ApiClient.discover().call("GET", "/computes"), output, COMPUTE_COLUMNS)


@app.command()
def show(
    name: str = typer.Option(..., "--name", "-n"),
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
) -> None:
    """Show a compute."""
    emit(ApiClient.discover().call("GET", f"/computes/{name}"), output)


@app.command()
def delete(
    name: str = typer.Option(..., "--name", "-n"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
) -> None:
    """Delete a compute no endpoint runs on."""
    confirm(yes, f"Delete compute {name!r}?")
    ApiClient.discover().call("DELETE", f"/computes/{name}")
    typer.echo(f"deleted compute {name}", err=True)
