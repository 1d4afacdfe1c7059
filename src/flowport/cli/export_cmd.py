"""``online-endpoint export`` and ``online-deployment export``: manifests from the server's state."""

from __future__ import annotations

from pathlib import Path

import typer

from flowport.cli.api_client import ApiClient
from flowport.cli.common import fail

FORMATS = ("kubernetes",)

FormatOption = typer.Option(..., "--format", help="What to export: kubernetes (manifests for kubectl apply).")
OutputDirOption = typer.Option(
    None, "--output", "-o", help="Folder for the files (made 0700, files 0600); default: print to stdout."
)
NamespaceOption = typer.Option(None, "--namespace", help="Namespace written into every object.")


def export(
    endpoint: str,
    deployment: str | None,
    format_: str,
    output: Path | None,
    namespace: str | None,
    images: dict[str, str],
    gateway_image: str | None = None,
    gateway_replicas: int = 2,
) -> None:
    """Fetch the export document (keys and connections in clear) and write the manifests."""
    if format_ not in FORMATS:
        fail(f"--format {format_!r} is not supported; use {' or '.join(FORMATS)}")
    from flowport.build.kubernetes import (
        ExportError,
        ExportOptions,
        export_manifests,
        render,
        write_manifests,
    )

    params = {"deployment": deployment} if deployment else None
    document = ApiClient.discover().call("POST", f"/endpoints/{endpoint}/export", params=params)
    options = ExportOptions(
        namespace=namespace or document["endpoint"].get("namespace"),
        images=images,
        gateway_image=gateway_image,
        gateway_replicas=gateway_replicas,
    )
    try:
        files = export_manifests(document, options, deployment)
    except ExportError as exc:
        fail(str(exc))
    if output is None:
        typer.echo("---\n".join(render(objects) for objects in files.values()), nl=False)
        return
    try:
        written = write_manifests(files, output)
    except ExportError as exc:
        fail(str(exc))
    for path in written:
        typer.echo(f"wrote {path}", err=True)
    typer.echo(f"apply with: kubectl apply -f {output}", err=True)
