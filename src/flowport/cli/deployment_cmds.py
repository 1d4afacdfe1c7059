"""``flowport online-deployment ...`` (alias ``deployment``): ``az ml online-deployment``'s verbs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flowport.cli import build_cmds
from flowport.cli.api_client import ApiClient, print_notes
from flowport.cli.common import fail
from flowport.cli.endpoint_cmds import (
    AddOption,
    ChangeReferenceOption,
    FileOption,
    ForceStringOption,
    GroupOption,
    LocalOption,
    NoWaitOption,
    PolicyTokenOption,
    RemoveOption,
    SetOption,
    SubscriptionOption,
    WebOption,
    WorkspaceOption,
    confirm,
    spec_body,
)
from flowport.cli.export_cmd import FormatOption, NamespaceOption, OutputDirOption
from flowport.cli.export_cmd import export as export_manifests
from flowport.cli.output import Output, OutputOption, emit

app = typer.Typer(help="Deployments: a flow version on N instances under an endpoint.", no_args_is_help=True)

app.command("build-image")(build_cmds.build_image)

DEPLOYMENT_COLUMNS = ["name", "endpoint_name", "model", "instance_count", "provisioning_state"]

NameOption = typer.Option(None, "--name", "-n", help="Deployment name (overrides the file's).")
# az accepts any unambiguous prefix of a flag, so the Azure guide writes --endpoint for --endpoint-name
ENDPOINT_FLAGS = ("--endpoint-name", "--endpoint", "-e")
EndpointOption = typer.Option(None, *ENDPOINT_FLAGS, help="The endpoint (overrides the file's).")
EndpointRequired = typer.Option(..., *ENDPOINT_FLAGS, help="The endpoint.")


def _target(body: dict[str, Any], name: str | None, endpoint: str | None) -> tuple[str, str]:
    """The deployment and endpoint names, from the flags or else the file."""
    raw: dict[str, Any] = {}
    if body.get("yaml") is not None:
        from flowport.control.specs import SpecError, read_yaml

        try:
            parsed = read_yaml(body["yaml"], body.get("file") or "<file>")
        except SpecError as exc:
            fail(str(exc))
        raw = parsed if isinstance(parsed, dict) else {}
    name = name or raw.get("name")
    endpoint = endpoint or raw.get("endpoint_name")
    if not name:
        fail("give the deployment with --name/-n or a file with a name field")
    if not endpoint:
        fail("give the endpoint with --endpoint-name/-e or a file with an endpoint_name field")
    return str(name), str(endpoint)


def _finish(
    client: ApiClient, result: dict[str, Any], what: str, no_wait: bool, show: str, output: Output
) -> None:
    print_notes(result.get("notes", []))
    if no_wait:
        emit(result["operation"], output)
        return
    client.wait(result["operation"], what)
    emit(client.call("GET", show), output)


@app.command()
def create(
    file: Path | None = FileOption,
    name: str | None = NameOption,
    endpoint_name: str | None = EndpointOption,
    all_traffic: bool = typer.Option(
        False, "--all-traffic", help="Send 100% of the endpoint's traffic here."
    ),
    set_: list[str] | None = SetOption,
    no_wait: bool = NoWaitOption,
    skip_script_validation: bool = typer.Option(False, "--skip-script-validation", hidden=True),
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
    local_enable_gpu: bool = typer.Option(False, "--local-enable-gpu", hidden=True),
    package_model: bool = typer.Option(False, "--package-model", hidden=True),
    vscode_debug: bool = typer.Option(False, "--vscode-debug", hidden=True),
    web: bool = WebOption,
    policy_token: str | None = PolicyTokenOption,
    change_reference: str | None = ChangeReferenceOption,
) -> None:
    """Create a deployment from Azure's deployment YAML; waits until its instances are ready."""
    body = spec_body(file, set_)
    name, endpoint = _target(body, name, endpoint_name)
    client = ApiClient.discover()
    params = {"name": name, "all_traffic": str(all_traffic).lower()}
    result = client.call("POST", f"/endpoints/{endpoint}/deployments", json=body, params=params)
    show = f"/endpoints/{endpoint}/deployments/{name}"
    _finish(client, result, f"Creating deployment {name}", no_wait, show, output)


@app.command()
def update(
    file: Path | None = FileOption,
    name: str | None = NameOption,
    endpoint_name: str | None = EndpointOption,
    set_: list[str] | None = SetOption,
    add: tuple[str, str] | None = AddOption,
    remove: list[str] | None = RemoveOption,
    force_string: bool = ForceStringOption,
    no_wait: bool = NoWaitOption,
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
    skip_script_validation: bool = typer.Option(False, "--skip-script-validation", hidden=True),
    vscode_debug: bool = typer.Option(False, "--vscode-debug", hidden=True),
    web: bool = WebOption,
    policy_token: str | None = PolicyTokenOption,
    change_reference: str | None = ChangeReferenceOption,
) -> None:
    """Change a deployment (e.g. --set instance_count=3); instances roll one by one."""
    body = spec_body(file, set_, add, remove, force_string)
    name, endpoint = _target(body, name, endpoint_name)
    client = ApiClient.discover()
    result = client.call("PATCH", f"/endpoints/{endpoint}/deployments/{name}", json=body)
    show = f"/endpoints/{endpoint}/deployments/{name}"
    _finish(client, result, f"Updating deployment {name}", no_wait, show, output)


@app.command()
def show(
    name: str = typer.Option(..., "--name", "-n"),
    endpoint_name: str = EndpointRequired,
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
    web: bool = WebOption,
) -> None:
    """Show a deployment, its provisioning_state and, on failure, the reason."""
    emit(ApiClient.discover().call("GET", f"/endpoints/{endpoint_name}/deployments/{name}"), output)


@app.command("list")
def list_(
    endpoint_name: str = EndpointRequired,
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
) -> None:
    """List an endpoint's deployments."""
    emit(
        ApiClient.discover().call("GET", f"/endpoints/{endpoint_name}/deployments"),
        output,
        DEPLOYMENT_COLUMNS,
    )


@app.command()
def delete(
    name: str = typer.Option(..., "--name", "-n"),
    endpoint_name: str = EndpointRequired,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    no_wait: bool = NoWaitOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
) -> None:
    """Delete a deployment (it must have no traffic)."""
    confirm(yes, f"Delete deployment {name!r} of endpoint {endpoint_name!r}?")
    ApiClient.discover().delete(
        f"/endpoints/{endpoint_name}/deployments/{name}", f"Deleting deployment {name}", no_wait
    )


@app.command("get-logs")
def get_logs(
    name: str = typer.Option(..., "--name", "-n"),
    endpoint_name: str = EndpointRequired,
    lines: int = typer.Option(100, "--lines", "-l", min=1, help="How many of the last lines."),
    container: str | None = typer.Option(None, "--container", "-c", hidden=True),
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
) -> None:
    """The last lines of the deployment's instance logs (console and access log)."""
    path = f"/endpoints/{endpoint_name}/deployments/{name}/logs"
    for line in ApiClient.discover().call("GET", path, params={"lines": lines})["lines"]:
        typer.echo(line)


@app.command("get-data")
def get_data(
    name: str = typer.Option(..., "--name", "-n"),
    endpoint_name: str = EndpointRequired,
    since: str | None = typer.Option(
        None, "--since", help="Only records from this ISO time on (e.g. 2026-11-21T14:00Z)."
    ),
    output_file: Path | None = typer.Option(
        None, "--output-file", help="Write the JSONL here instead of stdout."
    ),
) -> None:
    """Collected inference data (data_collector) as JSON lines."""
    path = f"/endpoints/{endpoint_name}/deployments/{name}/data"
    text = ApiClient.discover().call("GET", path, params={"since": since} if since else None)
    if output_file is not None:
        output_file.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {text.count(chr(10))} record(s) to {output_file}", err=True)
    else:
        typer.echo(text, nl=False)


@app.command()
def export(
    name: str = typer.Option(..., "--name", "-n"),
    endpoint_name: str = typer.Option(..., "--endpoint-name", "-e"),
    format_: str = FormatOption,
    output: Path | None = OutputDirOption,
    namespace: str | None = NamespaceOption,
    image: str | None = typer.Option(
        None, "--image", help="The image the deployment runs (default flowport-EP-DEP:VERSION)."
    ),
) -> None:
    """Write one deployment as Kubernetes manifests (the endpoint's gateway is left as exported)."""
    images = {name: image} if image else {}
    export_manifests(endpoint_name, name, format_, output, namespace, images)
