"""``flowport flow build`` (a flow's container build context, ``pf flow build``'s flags) and
``flowport online-deployment build-image`` (a deployment's image, built with docker or buildah)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from flowport.build.builder import (
    build_command,
    choose_builder,
    pip_secrets,
    pip_settings,
    run_build,
)
from flowport.build.context import BuildContext, BuildError, write_context
from flowport.build.wheel import flowport_wheel
from flowport.cli.common import connection_service, fail, guarded, print_json
from flowport.connections import connection_template
from flowport.flow.flex import load_any_flow

BaseImageOption = typer.Option(
    None, "--base-image", help="The image to build FROM (default: a public slim Python image)."
)
WheelOption = typer.Option(
    None, "--flowport-wheel", help="flowport's wheel for the image (default: built from this checkout)."
)


@contextmanager
def build_errors() -> Iterator[None]:
    try:
        yield
    except BuildError as exc:
        fail(str(exc))


def _local_templates(source: Path) -> dict[str, dict[str, Any]]:
    """Templates of the stored connections the flow may use; the store is opened only if it may use one."""
    flow = load_any_flow(source)
    candidates = flow.connection_candidates()
    if not candidates:
        return {}
    stored = {c.name: c for c in connection_service().list() if c.name in candidates}
    named = {node.connection for node in flow.nodes.values() if node.connection}
    for name in sorted(named - set(stored)):
        typer.echo(
            f"note: connection {name!r} is not stored here; pass it when the container runs "
            f"({name}='{{\"type\": ...}}' or a mounted connections file)",
            err=True,
        )
    return {name: connection_template(conn.to_dict()) for name, conn in stored.items()}


def _write(
    source: Path,
    output: Path,
    wheel: Path | None,
    templates: Mapping[str, Mapping[str, Any]],
    **options: Any,
) -> BuildContext:
    with tempfile.TemporaryDirectory(prefix="flowport-build-") as scratch:
        built = flowport_wheel(Path(scratch), wheel)
        return write_context(source, output, built, connections=templates, **options)


@guarded
def flow_build(
    source: Path = typer.Option(..., "--source", help="The flow folder (or its YAML file, or a .prompty)."),
    output: Path = typer.Option(..., "--output", "-o", help="The folder to write the build context to."),
    format_: str = typer.Option("docker", "--format", "-f", help="docker (the only format flowport builds)."),
    variant: str | None = typer.Option(
        None, "--variant", "-v", help="Serve this variant, as '${node.variant_1}' (default: the flow's)."
    ),
    base_image: str | None = BaseImageOption,
    flowport_wheel_path: Path | None = WheelOption,
) -> None:
    """Write a Docker build context: the flow, its requirements, flowport, a non-root Dockerfile."""
    if format_ != "docker":
        fail(f"--format {format_} is not supported: flowport builds container images (--format docker)")
    source = source.expanduser().resolve()
    if not source.exists():
        fail(f"--source {source} does not exist; give a flow folder, its YAML file or a .prompty file")
    with build_errors():
        context = _write(
            source,
            output.expanduser().resolve(),
            flowport_wheel_path,
            _local_templates(source),
            variant=variant,
            base_image=base_image,
        )
    _report(context)
    typer.echo(
        f"build it: docker build -t IMAGE {context.folder}  (or buildah bud --layers -t IMAGE ...)",
        err=True,
    )


def _report(context: BuildContext, kept: bool = True, **extra: Any) -> None:
    print_json(
        {
            "output": str(context.folder) if kept else None,
            "connections": list(context.connections),
            "environment": list(context.environment),
            **extra,
        }
    )


def _registered(reference: str, client: Any) -> Mapping[str, Any] | None:
    """A registered environment (``azureml:name:version`` or ``name@latest``) from the server."""
    from flowport.control.specs import SpecError, parse_reference

    try:
        name, version = parse_reference(reference, "environment")
    except SpecError:
        typer.echo(
            f"note: environment {reference!r} is not a reference; using the default base image", err=True
        )
        return None
    return client.call("GET", f"/environments/{name}", params={"version": version} if version else None)


def _environment(
    deployment: Mapping[str, Any], client: Any = None
) -> tuple[str | None, Path | None, Path | None]:
    """A deployment's ``environment`` (inline or registered): (image, build context, Dockerfile)."""
    environment = deployment.get("environment")
    if environment is None:
        return None, None, None
    if not isinstance(environment, Mapping):
        environment = _registered(str(environment), client) if client is not None else None
        if environment is None:
            return None, None, None
    image = environment.get("image")
    build = environment.get("build")
    if not isinstance(build, Mapping) or not build.get("path"):
        return (str(image) if image else None), None, None
    folder = Path(str(build["path"])).expanduser().resolve()
    if not folder.is_dir():
        fail(
            f"environment.build.path {build['path']!r} is not a folder here (looked for {folder}); "
            "run from the deployment YAML's folder or make the path absolute"
        )
    dockerfile = folder / str(build.get("dockerfile_path") or "Dockerfile")
    if not dockerfile.is_file():
        fail(f"environment.build.dockerfile_path: {dockerfile} does not exist")
    return (str(image) if image else None), folder, dockerfile


def environment_tag(tag: str) -> str:
    """``repo/name:1`` -> ``repo/name-environment:1``: the image an ``environment.build`` makes."""
    head, slash, last = tag.rpartition("/")
    name, _, version = last.partition(":")
    return f"{head}{slash}{name}-environment:{version or 'latest'}"


@guarded
def build_image(
    name: str = typer.Option(..., "--name", "-n", help="The deployment."),
    endpoint_name: str = typer.Option(..., "--endpoint-name", "-e"),
    tag: str = typer.Option(..., "--tag", "-t", help="The image's name, e.g. flows/blue:1."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Keep the build context in this folder (default: a temporary one)."
    ),
    base_image: str | None = typer.Option(
        None, "--base-image", help="The image to build FROM (default: its environment, else python slim)."
    ),
    builder: str = typer.Option("auto", "--builder", help="auto (docker if it answers, else buildah)."),
    flowport_wheel_path: Path | None = WheelOption,
) -> None:
    """Build the deployment's image: its model's flow served by flowport, from environment.image
    (or an image built from environment.build) as base; connections never enter the image."""
    from flowport.cli.api_client import ApiClient

    client = ApiClient.discover()
    deployment = client.call("GET", f"/endpoints/{endpoint_name}/deployments/{name}")
    if deployment.get("code_configuration"):
        fail(
            f"deployment {name!r} runs a scoring script; build-image builds flow deployments only "
            "(docs/scoring-scripts.md)"
        )
    model_name, _, version = str(deployment["model"]).removeprefix("azureml:").partition(":")
    model = client.call("GET", f"/models/{model_name}", params={"version": version} if version else None)
    source = Path(model["path"])
    if not source.is_dir():
        fail(
            f"the model's files ({source}) are not readable here: run build-image on the machine "
            "where flowport server runs, as its user"
        )
    image, env_folder, env_dockerfile = _environment(deployment, client)
    stored = client.call("GET", "/connections")
    templates = {c["name"]: connection_template(c) for c in stored}
    with build_errors(), tempfile.TemporaryDirectory(prefix="flowport-image-") as scratch:
        chosen = choose_builder(builder)
        secrets = pip_secrets(Path(scratch), pip_settings())
        base = base_image or image
        if base_image is None and env_folder is not None:
            base = environment_tag(tag)
            typer.echo(f"building the environment image {base} from {env_dockerfile}", err=True)
            command = build_command(chosen, env_folder, base, dockerfile=env_dockerfile, secrets={})
            run_build(command)
        folder = output.expanduser().resolve() if output else Path(scratch) / "context"
        context = _write(
            source,
            folder,
            flowport_wheel_path,
            templates,
            base_image=base,
            variables=list(deployment.get("environment_variables") or {}),
            name=model.get("flow_name"),
        )
        run_build(build_command(chosen, context.folder, tag, secrets=secrets))
        _report(context, kept=output is not None, image=tag, builder=chosen, base_image=base)
