"""``flowport environment ...``: Azure environment YAML files registered as immutable versions."""

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

app = typer.Typer(
    help="Environments: conda files, images and build folders registered as immutable versions.",
    no_args_is_help=True,
)

ENVIRONMENT_COLUMNS = ["name", "version", "image", "created_at"]


@app.command()
def create(
    file: Path | None = FileOption,
    name: str | None = typer.Option(None, "--name", "-n"),
    version: str | None = typer.Option(None, "--version", "-v", help="Default: the next number."),
    image: str | None = typer.Option(None, "--image", "-i", help="The base image (a label locally)."),
    conda_file: Path | None = typer.Option(None, "--conda-file", help="A conda YAML file."),
    build_context: Path | None = typer.Option(
        None, "--build-context", "-b", help="A folder with a Dockerfile (build.path)."
    ),
    dockerfile_path: str | None = typer.Option(
        None, "--dockerfile-path", help="The Dockerfile inside the build folder (default: Dockerfile)."
    ),
    description: str | None = typer.Option(None, "--description"),
    datastore: str | None = typer.Option(None, "--datastore", hidden=True),
    set_: list[str] | None = SetOption,
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
) -> None:
    """Register an environment version: its conda file's content and a snapshot of its build folder."""
    body = spec_body(file, set_)
    for key, value in {"name": name, "version": version, "image": image, "datastore": datastore}.items():
        if value:
            body["set"].append(f"{key}={value}")
    if conda_file is not None:
        body["set"].append(f"conda_file={conda_file.expanduser().resolve()}")
    if build_context is not None:
        body["set"].append(f"build.path={build_context.expanduser().resolve()}")
    if dockerfile_path is not None:
        body["set"].append(f"build.dockerfile_path={dockerfile_path}")
    if description is not None:
        body["set"].append(f"description={description}")
        body["force_string"] = True  # az keeps a flag's text as given
    result = ApiClient.discover().call("POST", "/environments", json=body)
    print_notes(result.pop("notes", []))
    emit(result, output)


list_command(app, "environments", ENVIRONMENT_COLUMNS, "List environment versions.")


@app.command()
def show(
    name: str = typer.Option(..., "--name", "-n"),
    version: str | None = typer.Option(None, "--version", "-v", help="Default: the newest."),
    label: str | None = typer.Option(None, "--label", "-l", help="latest (the newest version)."),
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
) -> None:
    """Show an environment version."""
    if label not in (None, "latest"):
        raise typer.BadParameter(f"label {label!r} is not supported; use latest", param_hint="--label")
    params = {"version": version} if version else None
    emit(ApiClient.discover().call("GET", f"/environments/{name}", params=params), output)


version_command(
    app,
    "environments",
    "archive",
    "POST",
    "/archive",
    "Archive a version (or all): left out of list and @latest, still usable by name:version.",
)
version_command(app, "environments", "restore", "POST", "/restore", "Restore an archived version (or all).")
version_command(
    app,
    "environments",
    "delete",
    "DELETE",
    "",
    "Delete an environment version (or all); deployments keep the packages they resolved.",
)
