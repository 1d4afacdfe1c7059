"""Registered models: a flow folder validated, snapshotted immutably, and versioned.

A snapshot is a copy of the folder with its ``additional_includes`` resolved, stored under
``<home>/models/<content hash>``; registering the same content twice shares one snapshot.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowport.control.errors import ApiError
from flowport.control.specs import ModelSpec
from flowport.control.tool_check import check_tools
from flowport.flow import MISSING, FlowDef, FlowError, InputDef, ValueType
from flowport.flow.flex import FLEX_MARK
from flowport.flow.flex import find_any_flow_file as find_flow_file
from flowport.flow.flex import load_any_flow as load_flow
from flowport.flow.includes import copy_files, drop_includes, flow_files
from flowport.flow.yaml import load_yaml_file
from flowport.settings import make_private
from flowport.store import Documents
from flowport.store.tables import utcnow


def _refuse_home(path: Path, home: Path, what: str) -> None:
    """Nothing of ``FLOWPORT_HOME`` (keys, database, other models) may end up in a snapshot."""
    resolved, home = path.resolve(), home.resolve()
    if resolved == home or home in resolved.parents or resolved in home.parents:
        raise ApiError(
            400,
            "ModelPathInHome",
            f"{what} ({path}) overlaps flowport's own folder {home}, which holds its keys and "
            "database; keep flows elsewhere",
        )


def _refuse_home_includes(source: Path, home: Path) -> None:
    """Checked before anything is copied: the loader reports a malformed list itself."""
    flow_file = find_flow_file(source)
    if flow_file.suffix == ".prompty":  # front matter and a template: no additional_includes
        return
    entries = (load_yaml_file(flow_file) or {}).get("additional_includes") or []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, str):
            _refuse_home(flow_file.parent / entry, home, f"additional_includes entry {entry!r}")


def snapshot_flow(source: Path, models_dir: Path) -> tuple[Path, str, FlowDef]:
    """Validate the flow at ``source`` and return (snapshot folder, content hash, flow).

    The digest is taken over exactly the bytes copied into the snapshot (symbolic links that
    leave the flow folder are refused), so a changed file always makes a new snapshot.
    """
    if not source.exists():
        raise ApiError(400, "ModelPathNotFound", f"path {str(source)!r} does not exist on the server")
    _refuse_home(source, models_dir.parent, "the model's path")
    with tempfile.TemporaryDirectory(prefix="flowport-snapshot-") as scratch:
        try:
            _refuse_home_includes(source, models_dir.parent)
            flow = load_flow(source, includes_dir=Path(scratch) / "includes")
            file = find_flow_file(source)
            files = flow_files(flow.path)
        except FlowError as exc:
            raise _invalid(exc) from None
        # the tools run in a throwaway copy: what they write there never reaches the snapshot
        checked = Path(scratch) / "check"
        _copy_flow(files, checked, file.name, flow, source)
        signature = check_tools(flow, checked, file.parent)
        target, digest = _publish(
            models_dir, lambda staging: _copy_flow(files, staging, file.name, flow, source)
        )
    return target, digest, _with_signature(load_flow(target), signature)


def _publish(root: Path, fill: Callable[[Path], str]) -> tuple[Path, str]:
    """``fill`` a fresh private folder under ``root`` (it returns the content's digest), then move
    it to ``root/<digest>``; when that snapshot exists already, it is the one kept."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    try:
        digest = fill(staging)
        make_private(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    target = root / digest[:24]
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise
    return target, digest


def _with_signature(flow: FlowDef, inputs: dict[str, Any] | None) -> FlowDef:
    """A flex flow whose YAML declares no inputs gets those its entry's signature gives (read by
    the checker's child process), so the model document lists them for clients and the studio."""
    if not inputs or FLEX_MARK not in flow.raw or flow.inputs:
        return flow
    read = {
        name: InputDef(name, ValueType(spec["type"]), spec.get("default", MISSING))
        for name, spec in inputs.items()
        if spec.get("type") in ValueType.__members__.values()
    }
    return dataclasses.replace(flow, inputs=read)


def snapshot_files(source: Path, root: Path, home: Path | None, under: str | None = None) -> Path:
    """Copy a folder (or one file) as it is into ``root/<content hash>``: no flow validation.

    ``under`` puts the files in a subfolder of that name (Azure's model layout: the model
    folder's own name below ``AZUREML_MODEL_DIR``). Same content, same snapshot.
    """
    if not source.exists():
        raise ApiError(400, "ModelPathNotFound", f"path {str(source)!r} does not exist on the server")
    if home is not None:  # None: ``source`` is one of flowport's own snapshots
        _refuse_home(source, home, "the path")
    try:
        files = flow_files(source)
    except FlowError as exc:
        raise ApiError(400, "PathNotReadable", str(exc), problems=exc.problems) from None
    if under is not None and source.is_dir():
        files = {f"{under}/{rel}": path for rel, path in files.items()}

    def fill(staging: Path) -> str:
        try:
            return copy_files(files, staging)
        except OSError as exc:
            raise ApiError(400, "PathNotReadable", f"cannot copy {source}: {exc}") from None

    return _publish(root, fill)[0]


def _holds_a_flow(path: Path) -> bool:
    """A flow file (YAML or ``.prompty``), or a folder with one at its top."""
    if path.is_file():
        return path.suffix in (".yaml", ".yml", ".prompty")
    try:
        find_flow_file(path)
    except FlowError:
        return False
    return True


def flow_folder_name(source: Path | str) -> str:
    """The name users know a flow by: its folder's (the snapshot's is a content hash)."""
    path = Path(source)
    return path.parent.name if path.is_file() else path.name


def _copy_flow(files: dict[str, Path], target: Path, flow_file: str, flow: FlowDef, source: Path) -> str:
    """Copy the listing into ``target`` (includes already in place); the digest of what was copied."""
    try:
        digest = copy_files(files, target)
        if flow.additional_includes:
            drop_includes(target / flow_file)
    except OSError as exc:
        raise ApiError(400, "ModelNotReadable", f"cannot copy the flow from {source}: {exc}") from None
    return digest


def _invalid(exc: FlowError) -> ApiError:
    return ApiError(400, "InvalidFlow", f"the model's flow is not valid:\n{exc}", problems=exc.problems)


class ModelRegistry:
    def __init__(self, rows: Documents, models_dir: Path) -> None:
        self.rows = rows
        self.models_dir = models_dir

    def register(self, spec: ModelSpec) -> dict[str, Any]:
        """A flow folder, validated and snapshotted; any other folder or file as plain files
        (Azure's ``custom_model``: what a scoring script reads from ``AZUREML_MODEL_DIR``)."""
        if spec.path.exists() and not _holds_a_flow(spec.path):
            return self.register_files(spec)
        snapshot, digest, flow = snapshot_flow(spec.path, self.models_dir)
        version = spec.version or next_version(self.rows, spec.name)
        if self.rows.get(name=spec.name, version=version) is not None:
            raise ApiError(
                409,
                "ModelVersionExists",
                f"model {spec.name}:{version} already exists; versions are immutable. "
                "Leave out version to get the next one.",
            )
        properties = dict(spec.properties)
        if flow.is_chat:
            properties.setdefault("azureml.promptflow.mode", "chat")
            properties.setdefault("azureml.promptflow.chat_input", flow.chat_input or "")
            properties.setdefault("azureml.promptflow.chat_output", flow.chat_output or "")
        document = {
            "description": spec.description,
            "tags": spec.tags,
            "properties": properties,
            "path": str(snapshot),
            "source_path": str(spec.path),
            "content_hash": digest,
            "flow_name": flow_folder_name(spec.path),
            "flow_type": "chat" if flow.is_chat else "standard",
            "flow": flow_interface(flow),
        }
        self.rows.put({"name": spec.name, "version": version}, document, archived=False, created_at=utcnow())
        return self.get(spec.name, version)

    def register_files(self, spec: ModelSpec) -> dict[str, Any]:
        """A model that is files for a scoring script, not a flow: snapshotted in Azure's layout."""
        snapshot = snapshot_files(spec.path, self.models_dir, self.models_dir.parent, spec.path.name)
        version = spec.version or next_version(self.rows, spec.name)
        if self.rows.get(name=spec.name, version=version) is not None:
            raise ApiError(409, "ModelVersionExists", f"model {spec.name}:{version} already exists")
        document = {
            "description": spec.description,
            "tags": spec.tags,
            "properties": dict(spec.properties),
            "path": str(snapshot),
            "source_path": str(spec.path),
            "content_hash": snapshot.name,
            "flow_name": flow_folder_name(spec.path),
            "layout": "files",
            "notes": [
                "no flow file (flow.dag.yaml, flow.flex.yaml, .prompty): registered as plain files, "
                "for a scoring-script deployment (code_configuration) to read from AZUREML_MODEL_DIR"
            ],
        }
        self.rows.put({"name": spec.name, "version": version}, document, archived=False, created_at=utcnow())
        return self.get(spec.name, version)

    def model_dir(self, model: dict[str, Any]) -> Path:
        """What ``AZUREML_MODEL_DIR`` points at: a folder holding the model under its folder's name.

        A flow model's snapshot holds the flow's files at its top: it is laid out anew (once
        per content) with the flow folder's name above them, as Azure mounts models.
        """
        if model.get("layout") == "files":
            return Path(model["path"])
        name = model.get("flow_name") or "model"
        return snapshot_files(Path(model["path"]), self.models_dir, None, name)

    def get(self, name: str, version: str | None = None) -> dict[str, Any]:
        """One version, or the newest version that is not archived."""
        if version is None:
            live = [m for m in self.rows.list(name=name) if not m["archived"]]
            if not live:
                raise ApiError(404, "ModelNotFound", f"model {name!r} has no versions that are not archived")
            return _shown(max(live, key=version_order))
        row = self.rows.get(name=name, version=version)
        if row is None:
            raise ApiError(404, "ModelNotFound", f"model {name}:{version} does not exist")
        return _shown(row)

    def list(self, name: str | None = None, archived: bool = False) -> list[dict[str, Any]]:
        rows = self.rows.list(name=name) if name else self.rows.list()
        return [_shown(r) for r in rows if archived or not r["archived"]]

    def archive(self, name: str, version: str | None) -> list[dict[str, Any]]:
        rows = [self.rows.get(name=name, version=version)] if version else self.rows.list(name=name)
        found = [r for r in rows if r is not None]
        if not found:
            raise ApiError(
                404, "ModelNotFound", f"model {name}{':' + version if version else ''} does not exist"
            )
        for row in found:
            set_archived(self.rows, name, row["version"], True)
        return [self.get(name, r["version"]) for r in found]


def flow_interface(flow: FlowDef) -> dict[str, Any]:
    """What a client needs to call the flow and deploy it: inputs, outputs, connections."""
    return {
        "inputs": {
            name: {
                "type": str(spec.type),
                **({"default": spec.default} if spec.default is not MISSING else {}),
                **({"enum": list(spec.enum)} if spec.enum else {}),
                **({"description": spec.description} if spec.description else {}),
                "is_chat_input": spec.is_chat_input,
                "is_chat_history": spec.is_chat_history,
            }
            for name, spec in flow.inputs.items()
        },
        "outputs": {
            name: {"is_chat_output": spec.is_chat_output, "evaluation_only": spec.evaluation_only}
            for name, spec in flow.outputs.items()
        },
        "connections": sorted({n.connection for n in flow.nodes.values() if n.connection}),
        **({"entry": flow.raw[FLEX_MARK]["entry"]} if FLEX_MARK in flow.raw else {}),
        **(
            {"chat_history_format": "messages"}
            if flow.is_chat and flow.chat_history_format == "messages"
            else {}
        ),
    }


def next_version(rows: Documents, name: str) -> str:
    """The number after the highest numbered version of ``name`` (models, environments)."""
    numbers = [int(r["version"]) for r in rows.list(name=name) if str(r["version"]).isdigit()]
    return str(max(numbers, default=0) + 1)


def set_archived(rows: Documents, name: str, version: str, archived: bool) -> None:
    """Archive or restore one version, its document as it is."""
    row = rows.get(name=name, version=version)
    assert row is not None
    document = {k: v for k, v in row.items() if k not in ("name", "version", "archived", "created_at")}
    rows.put({"name": name, "version": version}, document, archived=archived)


def version_order(row: dict[str, Any]) -> tuple[int, str]:
    """Numbered versions in number order, the others before them."""
    version = str(row["version"])
    return (int(version) if version.isdigit() else -1, version)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return shown_version(row, type="custom_model")


def shown_version(row: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """A versioned row (a model, an environment) as the API shows it, with its ``azureml:`` id."""
    return {
        "name": row["name"],
        "version": str(row["version"]),
        "id": f"azureml:{row['name']}:{row['version']}",
        **fixed,
        "archived": bool(row["archived"]),
        "created_at": row["created_at"],
        **{k: v for k, v in row.items() if k not in ("name", "version", "archived", "created_at")},
    }
