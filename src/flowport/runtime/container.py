"""The entry of a flow image (``flowport flow build``): the instance server on ``0.0.0.0:8080``.

``python -m flowport.runtime.container`` serves the flow at ``FLOWPORT_FLOW`` as a deployment's
instance does, with connections read, first to last (a later one of the same name wins):

1. the templates written at build time (``/app/connections``: type and configs, secret fields
   as ``${env:NAME_FIELD}``), each used only when nothing below replaces it;
2. connection YAML files mounted at ``FLOWPORT_CONNECTIONS`` (default ``/run/flowport/connections``:
   a file holding one connection or a list of them, or a folder of such files);
3. the environment, as everywhere in flowport: ``<name>={json}`` replaces a connection,
   ``<NAME>_<FIELD>=value`` sets one field.

A deployment's request settings are not baked in: ``FLOWPORT_MAX_CONCURRENT_REQUESTS`` and
``FLOWPORT_REQUEST_TIMEOUT_MS`` (read by ``ServeSettings``, as for ``flowport flow serve``) set
them when the container runs; the Kubernetes manifests do.

``--check`` exits 0 when the server's ``/health`` answers 200: the image's HEALTHCHECK.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from flowport.build.image import (
    CONNECTION_TEMPLATES_DIR,
    CONNECTIONS_ENV,
    CONNECTIONS_MOUNT,
    FLOW_DIR,
    FLOW_ENV,
    FLOW_NAME_ENV,
    HEALTH_PATH,
    IMAGE_PORT,
    PORT_ENV,
)
from flowport.connections import ConnectionSpecError, connection_from_spec, connection_row
from flowport.runtime.base import InstanceConfig
from flowport.serving.settings import ServeSettings, SettingsError

_SUFFIXES = (".yaml", ".yml", ".json")


class ContainerError(Exception):
    """The container cannot start: one line saying what to set or mount."""


def read_specs(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Connection specs from a YAML/JSON file (one mapping or a list) or a folder of such files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
        return [spec for file in files for spec in read_specs(file)]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContainerError(f"cannot read connections file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ContainerError(f"connections file {path} is not UTF-8 text: mount connection YAML") from None
    except yaml.YAMLError as exc:
        raise ContainerError(f"connections file {path} is not valid YAML: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) and item.get("name") for item in items):
        raise ContainerError(f"{path} must hold a connection (a mapping with a name) or a list of them")
    return [(path, item) for item in items]


def gather_connections(
    templates: Path, mounted: Path | None, environ: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """``{name: row}`` in the clear form an instance is handed (see the module's docstring)."""
    rows: dict[str, dict[str, Any]] = {}
    given = read_specs(mounted) if mounted is not None and mounted.exists() else []
    replaced = {spec["name"] for _, spec in given} | set(environ)
    shapes = read_specs(templates) if templates.is_dir() else []
    for path, spec in [*((p, s) for p, s in shapes if s["name"] not in replaced), *given]:
        try:
            rows[spec["name"]] = connection_row(connection_from_spec(spec, environ))
        except ConnectionSpecError as exc:
            hint = (
                f"; set it with -e or mount the connection at {CONNECTIONS_MOUNT}"
                if "environment variable" in str(exc)
                else ""
            )
            raise ContainerError(f"{path}: {exc}{hint}") from None
    return rows


def instance_config(environ: Mapping[str, str]) -> InstanceConfig:
    settings = ServeSettings.from_env(environ)
    mounted = environ.get(CONNECTIONS_ENV) or CONNECTIONS_MOUNT
    if environ.get(CONNECTIONS_ENV) and not Path(mounted).exists():
        raise ContainerError(f"{CONNECTIONS_ENV}={mounted}: no such file or folder")
    return InstanceConfig(
        source=environ.get(FLOW_ENV) or FLOW_DIR,
        name=environ.get(FLOW_NAME_ENV) or "",
        connections=gather_connections(Path(CONNECTION_TEMPLATES_DIR), Path(mounted), environ),
        max_concurrent_requests=settings.max_concurrent_requests,
        request_timeout_ms=settings.request_timeout_ms,
    )


def port(environ: Mapping[str, str]) -> int:
    raw = environ.get(PORT_ENV) or str(IMAGE_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ContainerError(f"{PORT_ENV} must be a port number, got {raw!r}")
    return int(raw)


def check(environ: Mapping[str, str]) -> int:
    """0 when ``/health`` answers 200 on this container's port, else 1."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port(environ)}{HEALTH_PATH}", timeout=3) as answer:
            return 0 if answer.status == 200 else 1
    except (OSError, ContainerError):
        return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flowport.runtime.container")
    parser.add_argument("--check", action="store_true", help="exit 0 when /health answers 200")
    args = parser.parse_args(argv)
    if args.check:
        sys.exit(check(os.environ))
    from flowport.runtime.instance import serve

    try:
        config = instance_config(os.environ)
        listen = port(os.environ)
    except (ContainerError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    serve(config, host="0.0.0.0", port=listen)


if __name__ == "__main__":
    main()
