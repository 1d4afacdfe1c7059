"""``flowport online-endpoint ...`` (alias ``endpoint``): ``az ml online-endpoint``'s verbs and flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer

from flowport.cli.api_client import ApiClient, print_notes
from flowport.cli.common import fail, parse_pairs
from flowport.cli.export_cmd import FormatOption, NamespaceOption, OutputDirOption
from flowport.cli.export_cmd import export as export_manifests
from flowport.cli.output import Output, OutputOption, emit

app = typer.Typer(help="Online endpoints: a stable scoring URL with keys or tokens.", no_args_is_help=True)

ENDPOINT_COLUMNS = ["name", "auth_mode", "provisioning_state", "traffic", "scoring_uri"]

FileOption = typer.Option(None, "--file", "-f", help="Azure endpoint YAML.")
NameOption = typer.Option(None, "--name", "-n", help="Endpoint name (overrides the file's).")
SetOption = typer.Option(None, "--set", help="path=value to change a field, e.g. --set description=new.")
NoWaitOption = typer.Option(False, "--no-wait", help="Do not wait for the operation to finish.")
AddOption = typer.Option(None, "--add", help="PATH VALUE: append to a list, or PATH key=value.")
RemoveOption = typer.Option(None, "--remove", help="Remove a field (or a list item by index).")
ForceStringOption = typer.Option(False, "--force-string", help="Keep --set/--add values as text.")
# az's workspace and placement flags, accepted so copied commands run unchanged: flowport has one
# workspace, and every endpoint already runs locally (az's --local) and opens no browser (--web)
GroupOption = typer.Option(None, "--resource-group", "-g", hidden=True)
WorkspaceOption = typer.Option(None, "--workspace-name", "-w", hidden=True)
SubscriptionOption = typer.Option(None, "--subscription", hidden=True)


def list_command(app: typer.Typer, resource: str, columns: list[str], what: str) -> None:
    """``app``'s ``list``: the versions of ``/{resource}`` (models, environments), by name, archived too."""

    @app.command("list", help=what)
    def list_(
        name: str | None = typer.Option(None, "--name", "-n"),
        archived: bool = typer.Option(False, "--include-archived", help="Also list archived versions."),
        output: Output = OutputOption,
        resource_group: str | None = GroupOption,
        workspace_name: str | None = WorkspaceOption,
        subscription: str | None = SubscriptionOption,
    ) -> None:
        params = {"archived": str(archived).lower(), **({"name": name} if name else {})}
        emit(ApiClient.discover().call("GET", f"/{resource}", params=params), output, columns)


def version_command(app: typer.Typer, resource: str, verb: str, method: str, suffix: str, what: str) -> None:
    """``app``'s ``verb``: ``method`` on one version (``--version``) or every version of a
    ``/{resource}/{name}`` (models, environments)."""

    @app.command(verb, help=what)
    def command(
        name: str = typer.Option(..., "--name", "-n"),
        version: str | None = typer.Option(None, "--version", "-v", help="Default: every version."),
        output: Output = OutputOption,
        resource_group: str | None = GroupOption,
        workspace_name: str | None = WorkspaceOption,
        subscription: str | None = SubscriptionOption,
    ) -> None:
        params = {"version": version} if version else None
        emit(ApiClient.discover().call(method, f"/{resource}/{name}{suffix}", params=params), output)


LocalOption = typer.Option(False, "--local", hidden=True)
WebOption = typer.Option(False, "--web", hidden=True)
PolicyTokenOption = typer.Option(None, "--acquire-policy-token", hidden=True)
ChangeReferenceOption = typer.Option(None, "--change-reference", hidden=True)


def spec_body(
    file: Path | None,
    assignments: list[str] | None,
    add: tuple[str, str] | None = None,
    remove: list[str] | None = None,
    force_string: bool = False,
) -> dict[str, Any]:
    """The API body for a YAML file: its text, its path (for errors) and az's update flags."""
    body: dict[str, Any] = {"set": list(assignments or [])}
    if add:
        body["add"] = [list(add)]
    if remove:
        body["remove"] = list(remove)
    if force_string:
        body["force_string"] = True
    if file is not None:
        from flowport.flow import FlowError
        from flowport.flow.yaml import read_text_file

        path = file.expanduser().resolve()
        try:
            body["yaml"] = read_text_file(path)  # UTF-8 and size checked here, with the line
        except FlowError as exc:
            fail(exc.message)
        body["file"] = str(path)
        body["base_dir"] = str(path.parent)
    return body


def traffic_flag(text: str | None, flag: str) -> dict[str, int] | None:
    if text is None:
        return None
    from flowport.control.specs import SpecError, parse_traffic_flag  # the CLI starts faster without it

    try:
        return parse_traffic_flag(text, flag)
    except SpecError as exc:
        fail(str(exc.problems[0].message))


def require_name(name: str | None, file: Path | None) -> None:
    if not name and file is None:
        fail("give the endpoint with --name/-n or a YAML file with --file/-f")


@app.command()
def create(
    file: Path | None = FileOption,
    name: str | None = NameOption,
    auth_mode: str | None = typer.Option(
        None, "--auth-mode", help="key (default), aml_token or aad_token (flowport's tokens)."
    ),
    set_: list[str] | None = SetOption,
    no_wait: bool = NoWaitOption,
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
    web: bool = WebOption,
    policy_token: str | None = PolicyTokenOption,
    change_reference: str | None = ChangeReferenceOption,
) -> None:
    """Create an endpoint from Azure's endpoint YAML."""
    require_name(name, file)
    body = spec_body(file, set_)
    if auth_mode:
        body["set"].append(f"auth_mode={auth_mode}")
    client = ApiClient.discover()
    result = client.call("POST", "/endpoints", json=body, params={"name": name} if name else None)
    print_notes(result["notes"])
    emit(result["endpoint"], output, ENDPOINT_COLUMNS)


@app.command()
def update(
    name: str | None = NameOption,
    file: Path | None = FileOption,
    traffic: str | None = typer.Option(
        None, "--traffic", "-t", help='Traffic split, e.g. "blue=90 green=10".'
    ),
    mirror_traffic: str | None = typer.Option(
        None, "--mirror-traffic", help='Mirrored share, e.g. "green=10".'
    ),
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
    web: bool = WebOption,
    policy_token: str | None = PolicyTokenOption,
    change_reference: str | None = ChangeReferenceOption,
) -> None:
    """Change an endpoint: description, tags, auth mode, traffic, mirror traffic."""
    require_name(name, file)
    split, mirror = traffic_flag(traffic, "--traffic"), traffic_flag(mirror_traffic, "--mirror-traffic")
    client = ApiClient.discover()
    body = spec_body(file, set_, add, remove, force_string)
    name = name or _name_in_file(body)
    edits = set_ or add or remove
    if file is None and not edits and (split is not None or mirror is not None):
        shares = {"traffic": split, "mirror_traffic": mirror}
        emit(
            client.call("PUT", f"/endpoints/{name}/traffic", json=shares)["endpoint"],
            output,
            ENDPOINT_COLUMNS,
        )
        return
    body["set"] += [f"traffic.{k}={v}" for k, v in (split or {}).items()]
    body["set"] += [f"mirror_traffic.{k}={v}" for k, v in (mirror or {}).items()]
    result = client.call("PATCH", f"/endpoints/{name}", json=body)
    print_notes(result["notes"])
    emit(result["endpoint"], output, ENDPOINT_COLUMNS)


def _name_in_file(body: dict[str, Any]) -> str:
    from flowport.control.specs import SpecError, read_yaml

    try:
        raw = read_yaml(body.get("yaml") or "", body.get("file") or "<file>")
    except SpecError as exc:
        fail(str(exc))
    if not isinstance(raw, dict) or not raw.get("name"):
        fail(f"{body.get('file')} has no name; give one with --name/-n")
    return str(raw["name"])


@app.command()
def show(
    name: str = typer.Option(..., "--name", "-n"),
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
    web: bool = WebOption,
) -> None:
    """Show an endpoint with its scoring_uri and openapi_uri."""
    emit(ApiClient.discover().call("GET", f"/endpoints/{name}"), output, ENDPOINT_COLUMNS)


@app.command("list")
def list_(
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
) -> None:
    """List endpoints."""
    emit(ApiClient.discover().call("GET", "/endpoints"), output, ENDPOINT_COLUMNS)


@app.command()
def delete(
    name: str = typer.Option(..., "--name", "-n"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    no_wait: bool = NoWaitOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
) -> None:
    """Delete an endpoint and all its deployments."""
    confirm(yes, f"Delete endpoint {name!r} and all its deployments?")
    ApiClient.discover().delete(f"/endpoints/{name}", f"Deleting endpoint {name}", no_wait)


def confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not typer.get_text_stream("stdin").isatty():
        fail(f"{question} Pass --yes to confirm when not running interactively.")
    if not typer.confirm(question):
        raise typer.Exit(1)


@app.command()
def invoke(
    name: str = typer.Option(..., "--name", "-n"),
    request_file: Path = typer.Option(..., "--request-file", "-r", help="JSON file with the flow's inputs."),
    deployment_name: str | None = typer.Option(
        None, "--deployment-name", "-d", help="Send to this deployment."
    ),
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
) -> None:
    """Call the endpoint's scoring URI with its key or token; prints the response body."""
    try:
        payload = request_file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {request_file}: {exc}")
    client = ApiClient.discover()
    endpoint = client.call("GET", f"/endpoints/{name}")
    credentials = client.call("POST", f"/endpoints/{name}/credentials")
    secret = credentials.get("accessToken") or credentials["primaryKey"]
    headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    if deployment_name:
        headers["azureml-model-deployment"] = deployment_name
    try:
        response = httpx.post(endpoint["scoring_uri"], content=payload, headers=headers, timeout=310)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {endpoint['scoring_uri']}: {exc}")
    if response.status_code != 200:
        typer.echo(response.text, err=True)
        deployment = response.headers.get("azureml-model-deployment", "-")
        fail(f"the endpoint answered {response.status_code} (deployment {deployment})")
    try:
        typer.echo(json.dumps(response.json(), indent=2, ensure_ascii=False))
    except ValueError:
        typer.echo(response.text)


@app.command("get-credentials")
def get_credentials(
    name: str = typer.Option(..., "--name", "-n"),
    output: Output = OutputOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
) -> None:
    """Print the endpoint's keys (primaryKey, secondaryKey) or a fresh token (accessToken, expiryTimeUtc)."""
    emit(ApiClient.discover().call("POST", f"/endpoints/{name}/credentials"), output)


@app.command("regenerate-keys")
def regenerate_keys(
    name: str = typer.Option(..., "--name", "-n"),
    key_type: str = typer.Option(
        "primary", "--key-type", help="primary or secondary: the other keeps working."
    ),
    key_value: str | None = typer.Option(None, "--key-value", help="Use this value instead of a random one."),
    no_wait: bool = NoWaitOption,
    resource_group: str | None = GroupOption,
    workspace_name: str | None = WorkspaceOption,
    subscription: str | None = SubscriptionOption,
    local: bool = LocalOption,
) -> None:
    """Replace one of the endpoint's keys."""
    body = {"key_type": key_type, "key_value": key_value}
    ApiClient.discover().call("POST", f"/endpoints/{name}/regenerate-keys", json=body)
    typer.echo(f"regenerated the {key_type} key of {name}", err=True)


@app.command()
def export(
    name: str = typer.Option(..., "--name", "-n"),
    format_: str = FormatOption,
    output: Path | None = OutputDirOption,
    namespace: str | None = NamespaceOption,
    image: list[str] | None = typer.Option(
        None,
        "--image",
        help="DEPLOYMENT=IMAGE: the image a deployment runs (default flowport-EP-DEP:VERSION).",
    ),
    gateway_image: str | None = typer.Option(
        None, "--gateway-image", help="The image the gateway runs (default: the first deployment's)."
    ),
    gateway_replicas: int = typer.Option(2, "--gateway-replicas", min=1, help="Gateway pods."),
) -> None:
    """Write the endpoint as Kubernetes manifests: its gateway and every deployment (Secrets included)."""
    images = parse_pairs(image or [], "--image")
    export_manifests(name, None, format_, output, namespace, images, gateway_image, gateway_replicas)


@app.command()
def compare(
    name: str = typer.Option(..., "--name", "-n"),
    deployments: tuple[str, str] | None = typer.Option(
        None, "--deployments", help="Two deployments, e.g. --deployments blue green (one mirrors the other)."
    ),
    clear: bool = typer.Option(
        False, "--clear", help="Forget the pairs recorded so far (after changing a deployment)."
    ),
    output: Output = typer.Option(
        Output.table,
        "--output",
        "-o",
        help="table (default, a summary), json, yaml or none.",
        case_sensitive=False,
    ),
) -> None:
    """Compare two deployments' answers to the same mirrored requests: agreement, latency, tokens."""
    client = ApiClient.discover()
    if clear:
        client.call("DELETE", f"/endpoints/{name}/compare")
        typer.echo(f"forgot the recorded pairs of {name}; new mirrored requests are recorded from now on")
        return
    if deployments is None:
        fail("give the two deployments to compare: --deployments blue green (or --clear)")
    found = client.call("GET", f"/endpoints/{name}/compare", params={"deployments": list(deployments)})
    if output in (Output.table, Output.tsv):
        typer.echo(compare_summary(found))
    else:
        emit(found, output)


def compare_summary(found: dict[str, Any]) -> str:
    """The report as a few lines for a terminal."""
    a, b = found["deployments"]
    if not found["pairs"]:
        return (
            f"no recorded pairs of {a} and {b} on {found['endpoint']} yet: send traffic to one "
            "with the other in mirror_traffic (flowport online-endpoint update -n NAME --mirror-traffic ...)"
        )
    lines = [
        f"{found['pairs']} mirrored requests answered by both {a} and {b}",
        f"agreement: {found['agreement_rate']:.1%} exact ({found['agreed']} of {found['pairs']})",
    ]
    for field, rate in found["field_agreement"].items():
        lines.append(f"  {field}: {rate:.1%}")
    latency = found["latency_ms"]
    for q in ("p50", "p95"):
        lines.append(
            f"latency {q}: {a} {latency[a][q]} ms, {b} {latency[b][q]} ms, delta {latency['delta'][q]:+} ms"
        )
    tokens = found["tokens"]
    if tokens:
        means = f"{a} {tokens[a]['mean']}, {b} {tokens[b]['mean']}"
        lines.append(f"tokens per request: {means}, delta {tokens['delta']['mean']:+}")
    if found["differing"]:
        lines.append(f"differing pairs ({found['differing_count']}, most recent first):")
    for pair in found["differing"]:
        fields = f" fields: {', '.join(pair['fields'])}" if pair["fields"] else ""
        lines.append(f"- {pair['request_id']}{fields}")
        lines.append(f"    request: {json.dumps(pair['request'], ensure_ascii=False)}")
        for side in (a, b):
            answer = json.dumps(pair[side]["answer"], ensure_ascii=False)
            lines.append(f"    {side} ({pair[side]['status']}): {answer}")
    return "\n".join(lines)
