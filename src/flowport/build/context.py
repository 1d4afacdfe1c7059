"""A container build context for one flow (``flowport flow build --format docker``).

The folder holds everything the image needs and nothing secret::

    Dockerfile          slim, non-root; flowport's instance server on IMAGE_PORT
    flow/               the flow, its additional_includes resolved (and a chosen variant made default)
    requirements.txt    the flow's requirements (a comment when it has none)
    connections/        one YAML per connection the flow uses: type and configs, each secret
                        field ``${env:NAME_FIELD}``, filled in from the container's environment
    wheels/             flowport itself, as a wheel (the image cannot reach this machine's source)
    settings.json       the environment variables the image expects, as prompt flow writes it
    README.md           how to build and run it

As ``pf flow build`` does, the layout keeps ``flow/``, ``connections/`` and ``settings.json``;
the serving stack inside is flowport's (``docs/containers.md``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowport.build.image import (
    CONNECTION_TEMPLATES_DIR,
    CONNECTIONS_MOUNT,
    DEFAULT_BASE_IMAGE,
    FLOW_DIR,
    FLOW_ENV,
    FLOW_NAME_ENV,
    HEALTH_COMMAND,
    HEALTH_PATH,
    IMAGE_COMMAND,
    IMAGE_HOME,
    IMAGE_PORT,
    IMAGE_USER,
    IMAGE_USER_NAME,
    PIP_CERT_SECRET,
    PIP_CONFIG_SECRET,
    SCORE_PATH,
    VENV_DIR,
)
from flowport.flow import FlowDef, load_flow, parse_variant
from flowport.flow.flex import find_any_flow_file, load_any_flow
from flowport.flow.includes import copy_files, drop_includes, flow_files
from flowport.flow.yaml import load_yaml_file, to_plain

MARKER = ".flowport-build"
"""Names a folder as a build context flowport wrote: only such a folder is ever overwritten."""
NO_REQUIREMENTS = "# the flow names no requirements\n"
FOLDER_FLOW_FILES = ("flow.dag.yaml", "flow.flex.yaml")
"""Flow files found from their folder: the image's FLOWPORT_FLOW names the folder, else the file."""


class BuildError(Exception):
    """A build context or an image could not be made; the message says why and what to do."""


@dataclass(frozen=True)
class BuildContext:
    folder: Path
    flow: FlowDef
    connections: tuple[str, ...]
    """Connections written as templates under ``connections/``."""
    environment: dict[str, str] = field(default_factory=dict)
    """``settings.json``: the variables the image expects, each with an empty value."""


def write_context(
    source: Path,
    output: Path,
    wheel: Path,
    *,
    connections: Mapping[str, Mapping[str, Any]] = {},
    variant: str | None = None,
    base_image: str | None = None,
    variables: Sequence[str] = (),
    name: str | None = None,
) -> BuildContext:
    """Write the build context of the flow at ``source`` into ``output``.

    ``connections`` are templates (``connection_template``: no secret in them) by name; only
    those the flow may use are written. ``variables`` names environment variables the image's
    runner must set (a deployment's), listed in ``settings.json``; ``name`` is the flow's name
    for clients (default: its folder's). Raises ``FlowError`` for an invalid flow, ``BuildError``
    when ``output`` is in the flow or holds anything but an earlier build context.
    """
    source = source.expanduser().resolve()
    file = find_any_flow_file(source)
    output = output.expanduser().resolve()
    if output == file.parent or file.parent in output.parents:
        raise BuildError(
            f"--output {output} is inside the flow folder {file.parent}; give a folder outside it"
        )
    with _prepared(output) as scratch:
        if variant:
            flow = _with_variant(source, variant, scratch)
        else:
            flow = load_any_flow(source, includes_dir=scratch)
        target = output / "flow"
        _copy_flow(flow, file, target)
        if variant:
            _make_default(target / file.name, variant)
        used = sorted(set(connections) & flow.connection_candidates())
        _write_connections(output / "connections", {conn: connections[conn] for conn in used})
        (output / "requirements.txt").write_bytes(_requirements(flow, target))
        wheels = output / "wheels"
        wheels.mkdir()
        shutil.copyfile(wheel, wheels / wheel.name)
        environment = {
            **{var: "" for var in variables},
            **{var: "" for conn in used for var in _env_references(connections[conn])},
        }
        (output / "settings.json").write_text(json.dumps(environment, indent=2) + "\n", encoding="utf-8")
        entry = FLOW_DIR if file.name in FOLDER_FLOW_FILES else f"{FLOW_DIR}/{file.name}"
        if not name:  # a model's snapshot is named by its hash: the caller gives the flow's name
            name = file.parent.name if file.name in FOLDER_FLOW_FILES else file.stem.removesuffix(".flex")
        (output / "Dockerfile").write_text(dockerfile(name, entry, base_image), encoding="utf-8")
        (output / "README.md").write_text(readme(name, environment, used), encoding="utf-8")
        (output / ".dockerignore").write_text("README.md\nsettings.json\n", encoding="utf-8")
    _share(output)
    return BuildContext(output, flow, tuple(used), environment)


@contextmanager
def _prepared(output: Path) -> Iterator[Path]:
    """``output`` made ready (new, empty, or an earlier context: emptied) and marked as a build
    context at once, so that a build that fails halfway can be run again into it; yields a
    scratch folder, removed afterwards."""
    if output.exists() and not output.is_dir():
        raise BuildError(f"--output {output} is a file; give a folder")
    if output.is_dir() and any(output.iterdir()):
        if not (output / MARKER).is_file():
            raise BuildError(
                f"--output {output} is not empty and holds no earlier build context; "
                "give a new or empty folder"
            )
        for child in output.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("written by flowport flow build\n", encoding="utf-8")
    scratch = output / ".scratch"
    scratch.mkdir()
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _with_variant(source: Path, variant: str, scratch: Path) -> FlowDef:
    if find_any_flow_file(source).name != "flow.dag.yaml":
        raise BuildError(f"--variant {variant!r} applies to a DAG flow (flow.dag.yaml) with node_variants")
    return load_flow(source, variant=variant, includes_dir=scratch)


def _make_default(flow_file: Path, variant: str) -> None:
    """The chosen variant becomes its node's default: the image serves that one."""
    node, variant_id = parse_variant(variant) or ("", "")
    raw = to_plain(load_yaml_file(flow_file))
    raw["node_variants"][node]["default_variant_id"] = variant_id
    flow_file.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _copy_flow(flow: FlowDef, file: Path, target: Path) -> None:
    """The flow's folder (with includes: the loader's copy holding them) below ``target``."""
    copy_files(flow_files(flow.path if flow.additional_includes else file.parent), target)
    if flow.additional_includes:
        drop_includes(target / file.name)


def _requirements(flow: FlowDef, copied: Path) -> bytes:
    declared = (flow.environment or {}).get("python_requirements_txt")
    path = copied / str(declared or "requirements.txt")
    if path.is_file():
        return path.read_bytes()
    if declared:
        raise BuildError(
            f"{flow.file} names python_requirements_txt {declared!r}, which is not in the flow folder"
        )
    return NO_REQUIREMENTS.encode()


def _write_connections(folder: Path, templates: Mapping[str, Mapping[str, Any]]) -> None:
    folder.mkdir()
    for name, template in templates.items():
        text = yaml.safe_dump(dict(template), sort_keys=False, allow_unicode=True)
        (folder / f"{_file_name(name)}.yaml").write_text(text, encoding="utf-8")


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "connection"


def _env_references(template: Mapping[str, Any]) -> list[str]:
    """The variables a template's ``${env:VAR}`` fields read."""
    values: list[Any] = list(template.values())
    for section in ("configs", "secrets"):
        if isinstance(template.get(section), Mapping):
            values.extend(template[section].values())
    return [v[6:-1] for v in values if isinstance(v, str) and v.startswith("${env:") and v.endswith("}")]


def _share(folder: Path) -> None:
    """Readable by everyone: the image's non-root user reads what COPY puts in (the CLI's umask
    is 077, and a flow's files may be private)."""
    for top, _dirs, files in os.walk(folder):
        os.chmod(top, 0o755)
        for name in files:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)


def _json(items: Sequence[str]) -> str:
    return json.dumps(list(items))


def dockerfile(flow_name: str, entry: str, base_image: str | None = None) -> str:
    """The Dockerfile: flowport and the flow's requirements in a venv, the flow, a non-root user."""
    base = base_image or DEFAULT_BASE_IMAGE
    secret = "/run/secrets"
    return f"""\
# The flow {flow_name!r} served by flowport's instance server (written by `flowport flow build`).
# Build: docker build -t IMAGE .   (or: buildah bud --layers -t IMAGE .)
# Connections and secrets are never part of the image: see README.md.
ARG BASE_IMAGE={base}
FROM ${{BASE_IMAGE}}

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1

# flowport and the flow's requirements, in one virtualenv. pip reads the optional build secrets
# {PIP_CONFIG_SECRET!r} (a pip.conf: index URLs) and {PIP_CERT_SECRET!r} (a CA bundle); no layer keeps them.
COPY wheels/ /tmp/flowport-wheels/
COPY requirements.txt /tmp/flowport-requirements.txt
RUN --mount=type=secret,id={PIP_CONFIG_SECRET},target={secret}/{PIP_CONFIG_SECRET} \\
    --mount=type=secret,id={PIP_CERT_SECRET},target={secret}/{PIP_CERT_SECRET} \\
    set -e; \\
    if [ -s {secret}/{PIP_CONFIG_SECRET} ]; then export PIP_CONFIG_FILE={secret}/{PIP_CONFIG_SECRET}; fi; \\
    if [ -s {secret}/{PIP_CERT_SECRET} ]; then export PIP_CERT={secret}/{PIP_CERT_SECRET}; fi; \\
    python3 -m venv {VENV_DIR}; \\
    {VENV_DIR}/bin/pip install --no-compile /tmp/flowport-wheels/*.whl -r /tmp/flowport-requirements.txt; \\
    rm -rf /tmp/flowport-wheels /tmp/flowport-requirements.txt

# the user the server runs as (useradd where the base has it, else written by hand)
RUN if command -v useradd >/dev/null 2>&1; then \\
      groupadd --system --gid {IMAGE_USER} {IMAGE_USER_NAME} && \\
      useradd --system --uid {IMAGE_USER} --gid {IMAGE_USER} --home-dir {IMAGE_HOME} \\
        --shell /usr/sbin/nologin {IMAGE_USER_NAME}; \\
    else \\
      echo '{IMAGE_USER_NAME}:x:{IMAGE_USER}:{IMAGE_USER}::{IMAGE_HOME}:/usr/sbin/nologin' \\
        >> /etc/passwd && \\
      echo '{IMAGE_USER_NAME}:x:{IMAGE_USER}:' >> /etc/group; \\
    fi; \\
    mkdir -p {IMAGE_HOME} && chown {IMAGE_USER}:{IMAGE_USER} {IMAGE_HOME} && chmod 700 {IMAGE_HOME}

COPY connections/ {CONNECTION_TEMPLATES_DIR}/
COPY flow/ {FLOW_DIR}/

USER {IMAGE_USER}:{IMAGE_USER}
WORKDIR {FLOW_DIR}
ENV HOME={IMAGE_HOME} \\
    PATH={VENV_DIR}/bin:$PATH \\
    {FLOW_ENV}={entry} \\
    {FLOW_NAME_ENV}={json.dumps(flow_name)}
EXPOSE {IMAGE_PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD {_json(HEALTH_COMMAND)}
CMD {_json(IMAGE_COMMAND)}
"""


def readme(flow_name: str, environment: Mapping[str, str], connections: Sequence[str]) -> str:
    """How to build and run the image, with the variables this flow's connections read."""
    env_flags = " ".join(f"-e {name}=..." for name in environment) or ""
    image = re.sub(r"[^a-z0-9._-]+", "-", flow_name.lower()).strip("-._") or "flow"  # a valid image name
    if connections:
        listed = ", ".join(connections)
        passing = (
            f"The flow uses the connection(s) {listed}. Their shapes are in `connections/` (no secret in "
            "them); each secret field reads the variable named there, e.g. `-e "
            f"{next(iter(environment), 'NAME_API_KEY')}=...`.\n"
        )
    else:
        passing = "The flow uses no stored connection.\n"
    return f"""\
# {flow_name}: a container image of the flow

Written by `flowport flow build`. The image runs flowport's instance server on port {IMAGE_PORT}
as user {IMAGE_USER} (not root): `POST {SCORE_PATH}`, `GET {HEALTH_PATH}`, `/ready`, `/swagger.json`,
`/metrics`. It checks no key: put it behind `flowport server`'s gateway or your own ingress.

## Build

    docker build -t {image}:1 .
    buildah bud --layers --format docker -t {image}:1 .

The `FROM` line takes `--build-arg BASE_IMAGE=...` (any image with `python3` and its `venv`
module). When pip needs another index or a proxy's CA, pass them as build secrets:
`--secret id={PIP_CONFIG_SECRET},src=pip.conf --secret id={PIP_CERT_SECRET},src=ca.pem`.

## Run

    docker run -p {IMAGE_PORT}:{IMAGE_PORT} {env_flags} {image}:1

{passing}
Connections can also come whole, never baked into the image:
- an environment variable named after the connection holding its YAML fields as JSON:
  `-e my_conn='{{"type": "open_ai", "api_key": "..."}}'`, or one field: `-e MY_CONN_API_KEY=...`;
- a file or folder of connection YAML files mounted at `{CONNECTIONS_MOUNT}`
  (`-v ./conns:{CONNECTIONS_MOUNT}:ro`; another path with `-e FLOWPORT_CONNECTIONS=...`).

Serving settings are environment variables as for `flowport flow serve`: `PROMPTFLOW_WORKER_NUM`,
`FLOWPORT_MAX_CONCURRENT_REQUESTS`, `FLOWPORT_REQUEST_TIMEOUT_MS`, `PROMPTFLOW_FLOW_INIT_CONFIG` (a
flex flow's init, JSON). `settings.json` lists the variables this flow's connections read.
"""
