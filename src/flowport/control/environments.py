"""Registered environments (Azure's environment YAML), and what a local process takes from one.

An environment version keeps its conda file's content and a snapshot of its build folder
(stored by content hash under ``<home>/environments``, as models are). Instances are local
processes in virtualenvs, so what applies of an environment is a list of pip requirement
lines: the conda file's packages, the build folder's ``requirements.txt`` and the
Dockerfile's ``RUN pip install ...`` commands. The rest of the Dockerfile is reported once,
as notes; a container build (``online-deployment build-image``) builds the folder as is.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flowport.control.conda import CondaEnvironment, absolute_requirement, read_conda_file
from flowport.control.errors import ApiError
from flowport.control.models import next_version, set_archived, snapshot_files, version_order
from flowport.control.models import shown_version as _shown
from flowport.control.specs import EnvironmentSpec
from flowport.flow import FlowError
from flowport.store import Documents
from flowport.store.tables import utcnow

_PIP = re.compile(
    r"^(?:(?:\S*/)?python[0-9.]*\s+-m\s+pip|(?:\S*/)?pip[0-9.]*)\s+install\b(?P<args>.*)$", re.S
)
_VALUE_OPTIONS = {
    "-r": "-r", "--requirement": "-r", "-c": "-c", "--constraint": "-c", "-e": "-e", "--editable": "-e",
    "-i": "--index-url", "--index-url": "--index-url", "--extra-index-url": "--extra-index-url",
    "-f": "--find-links", "--find-links": "--find-links",
}  # fmt: skip
"""pip install options that take a value and mean the same in a requirements file."""
_PATH_OPTIONS = ("-r", "-c", "-e", "--find-links")
_SKIPPED_WITH_VALUE = {"-t", "--target", "--prefix", "--root", "--progress-bar", "--cache-dir", "--timeout"}
_SILENT = {"FROM", "LABEL", "MAINTAINER", "ARG", "ENV"}
"""Instructions that say nothing a local process misses: not reported."""


@dataclass(frozen=True)
class LocalRequirements:
    """What a local process takes from an environment: pip lines, and what it leaves out (notes)."""

    pip: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _instructions(text: str) -> list[tuple[int, str, str]]:
    """A Dockerfile's (line, INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    found: list[tuple[int, str, str]] = []
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        found.append((start, keyword.upper(), rest.strip()))
    if pending.strip():
        keyword, _, rest = pending.strip().partition(" ")
        found.append((start, keyword.upper(), rest.strip()))
    return found


def _pip_lines(args: str, folder: Path) -> list[str] | None:
    """A ``pip install`` command's arguments as requirement lines; None when shlex cannot read it."""
    try:
        tokens = shlex.split(args)
    except ValueError:
        return None
    lines: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        option, eq, inline = token.partition("=")
        if option in _VALUE_OPTIONS:
            value = inline if eq else (tokens[index + 1] if index + 1 < len(tokens) else "")
            index += 1 if eq else 2
            flag = _VALUE_OPTIONS[option]
            if flag in _PATH_OPTIONS and (folder / value).exists():
                value = str((folder / value).resolve())
            lines.append(f"{flag} {value}")
            continue
        if option in _SKIPPED_WITH_VALUE:
            index += 1 if eq else 2
            continue
        if not token.startswith("-"):
            local = folder / token
            lines.append(str(local.resolve()) if token.startswith((".", "/")) and local.exists() else token)
        index += 1
    return lines


def read_dockerfile(folder: Path, dockerfile: str) -> LocalRequirements:
    """The build folder's ``requirements.txt`` and ``RUN pip install`` lines; the rest as notes."""
    path = folder / dockerfile
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ApiError(
            400,
            "DockerfileNotFound",
            f"build.dockerfile_path: cannot read {dockerfile!r} in the build folder: {exc.strerror}",
        ) from None
    pip: list[str] = []
    if (folder / "requirements.txt").is_file():  # its local paths are the build folder's
        listed = (folder / "requirements.txt").read_text(encoding="utf-8").splitlines()
        pip += [
            absolute_requirement(line, folder) for line in listed if line.strip() and not line.startswith("#")
        ]
    skipped: list[str] = []
    base = None
    for line, keyword, rest in _instructions(text):
        if keyword == "FROM":
            base = base or rest.split()[0] if rest else base
        if keyword in _SILENT:
            continue
        if keyword != "RUN":
            skipped.append(f"{dockerfile}:{line} {keyword}")
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            match = _PIP.match(command.strip())
            lines = _pip_lines(match["args"], folder) if match else None
            if lines is None:
                if command.strip():
                    skipped.append(f"{dockerfile}:{line} RUN {command.strip()}")
                continue
            pip += lines
    notes = []
    if skipped:
        notes.append(
            "build: instances run as local processes, so only requirements.txt and the Dockerfile's "
            "`RUN pip install` commands apply; not applied: " + "; ".join(skipped) + ". Install what "
            "they provide on this machine, or run the deployment from an image "
            "(flowport online-deployment build-image)"
        )
    if base:
        notes.append(f"build: FROM {base} is the base of container builds; local processes run here")
    return LocalRequirements(tuple(pip), tuple(notes))


def conda_environment(
    conda_file: Path | None, inline: dict[str, Any] | None, shown: str, base: Path | None = None
) -> CondaEnvironment:
    """A conda file read once (a path, or its mapping given inline, its local paths relative to
    ``base``): its pip lines and its document; 400 naming file and line."""
    try:
        if inline is not None:
            with tempfile.TemporaryDirectory(prefix="flowport-conda-") as scratch:
                path = Path(scratch) / "conda.yml"
                path.write_text(yaml.safe_dump(inline), encoding="utf-8")
                return read_conda_file(path, shown, base or Path.cwd())
        if conda_file is None:
            return CondaEnvironment(())
        return read_conda_file(conda_file, shown)
    except FlowError as exc:
        raise ApiError(400, "InvalidCondaFile", str(exc), problems=exc.problems) from None


class EnvironmentRegistry:
    def __init__(self, rows: Documents, root: Path) -> None:
        self.rows = rows
        self.root = root
        """``<home>/environments``: build folders, snapshotted by content."""

    def register(self, spec: EnvironmentSpec) -> dict[str, Any]:
        version = spec.version or next_version(self.rows, spec.name)
        if self.rows.get(name=spec.name, version=version) is not None:
            raise ApiError(
                409,
                "EnvironmentVersionExists",
                f"environment {spec.name}:{version} already exists; versions are immutable. "
                "Leave out version to get the next one.",
            )
        shown = str(spec.conda_file) if spec.conda_file else "conda_file"
        environment = conda_environment(spec.conda_file, spec.conda_inline, shown, spec.base_dir)
        pip = list(environment.pip)
        conda = spec.conda_inline if spec.conda_file is None else environment.document
        document: dict[str, Any] = {
            "description": spec.description,
            "tags": spec.tags,
            "image": spec.image,
            "conda_file": conda,
            **spec.extras,
        }
        notes: list[str] = []
        if spec.build_path is not None:
            if not spec.build_path.is_dir():
                raise ApiError(400, "BuildPathNotFound", f"build.path: {spec.build_path} is not a folder")
            snapshot = snapshot_files(spec.build_path, self.root, self.root.parent)
            local = read_dockerfile(snapshot, spec.dockerfile_path)
            pip += local.pip
            notes += local.notes
            document["build"] = {
                "path": str(snapshot),
                "source_path": str(spec.build_path),
                "dockerfile_path": spec.dockerfile_path,
            }
        document["pip_requirements"] = pip
        document["notes"] = notes
        self.rows.put({"name": spec.name, "version": version}, document, archived=False, created_at=utcnow())
        return self.get(spec.name, version)

    def find(self, name: str, version: str | None = None) -> dict[str, Any] | None:
        """One version, or the newest one that is not archived; None when there is none."""
        if version is not None:
            row = self.rows.get(name=name, version=version)
            return _shown(row) if row is not None else None
        live = [e for e in self.rows.list(name=name) if not e["archived"]]
        return _shown(max(live, key=version_order)) if live else None

    def get(self, name: str, version: str | None = None) -> dict[str, Any]:
        found = self.find(name, version)
        if found is None:
            what = f"{name}:{version}" if version else f"{name!r} (any version)"
            raise ApiError(404, "EnvironmentNotFound", f"environment {what} does not exist")
        return found

    def list(self, name: str | None = None, archived: bool = False) -> list[dict[str, Any]]:
        rows = self.rows.list(name=name) if name else self.rows.list()
        return [_shown(r) for r in rows if archived or not r["archived"]]

    def archive(self, name: str, version: str | None, archived: bool = True) -> list[dict[str, Any]]:
        """``az ml environment archive`` / ``restore``: an archived version is left out of ``list`` and
        of ``@latest``; named by its version it still resolves."""
        found = [self.get(name, version)] if version else self.list(name, archived=True)
        if not found:
            raise ApiError(404, "EnvironmentNotFound", f"environment {name!r} does not exist")
        for environment in found:
            set_archived(self.rows, name, environment["version"], archived)
        return [self.get(name, e["version"]) for e in found]

    def delete(self, name: str, version: str | None = None) -> list[dict[str, Any]]:
        """Remove a version (or every version). Deployments keep what they resolved it to."""
        found = [self.get(name, version)] if version else self.list(name, archived=True)
        if not found:
            raise ApiError(404, "EnvironmentNotFound", f"environment {name!r} does not exist")
        for environment in found:
            self.rows.delete(name=name, version=environment["version"])
        return found
