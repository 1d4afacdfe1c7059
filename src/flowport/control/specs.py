"""Azure ML's model, endpoint and deployment YAML, read as Azure means it.

Files are parsed as Azure ML's SDK (``azure-ai-ml``) parses them: YAML 1.1 scalars, so
``on``/``yes`` are booleans and ``010`` is 8. Every field Azure defines is accepted; fields
that cannot apply on flowport (``identity``, ``instance_type``, ``environment.image`` ...) are
kept and reported once as notes, and so are the read-only fields ``show`` prints. A field
Azure does not define is an error naming the file, the line and the nearest known field, as
are invalid values and values outside an Azure enum. docs/endpoints.md lists every field.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import importlib.util
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowport.connections.references import parse_connection_reference
from flowport.flow.errors import FlowError, Problem
from flowport.flow.yaml import YamlMap, parse_yaml, to_plain
from flowport.gateway.routes import DataCollection
from flowport.runtime.base import Probe

NAME_RULE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){2,31}$")
NAME_HELP = "3-32 characters: a letter first, then letters, digits and single dashes, not ending in a dash"
MODEL_NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
ROLLING_RATES = ("Minute", "Hour", "Day", "Month", "Year")
AUTH_MODES = ("key", "aml_token", "aad_token")
NETWORK_ACCESS = ("enabled", "disabled")
MODEL_TYPES = ("custom_model", "mlflow_model", "triton_model")
DEPLOYMENT_TYPES = ("managed", "kubernetes")
SCALE_TYPES = {"managed": ("default",), "kubernetes": ("default", "target_utilization")}
"""What Azure takes per deployment kind; flowport keeps a Kubernetes-only value on a managed
deployment as a note, for ``export --format kubernetes``."""
FLOW_TIMEOUT_MS = 300_000
"""The longest request_timeout_ms of a prompt flow deployment (Azure: 180000 for others)."""
SCRIPT_TIMEOUT_MS = 180_000
READ_ONLY = ("id", "provisioning_state", "scoring_uri", "openapi_uri", "creation_context", "created_at")
READ_ONLY += ("updated_at", "instances", "error", "notes", "latest_version", "utc_time_created")
READ_ONLY += ("scaling",)
"""Fields ``show`` prints (Azure's and flowport's): a shown document applies again unchanged."""
_READ_ONLY_NOTE = "is read-only (printed by show); ignored"
MAX_FIELD_CHARS = 64 * 1024
"""The longest text one field (a description, a tag, a variable's value) may hold."""
MAX_DOCUMENT_BYTES = 256 * 1024
"""The largest document (as JSON) that a model, endpoint or deployment may store."""


class SpecError(Exception):
    """A YAML file (or API body) has values flowport cannot take. Carries every problem."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _Reader:
    """Collects problems and notes while reading one document."""

    def __init__(self, raw: Any, file: str | None, kind: str) -> None:
        if not isinstance(raw, dict):
            raise SpecError([Problem("InvalidSpec", f"a {kind} must be a mapping of fields", file, 1)])
        size = len(json.dumps(to_plain(raw), default=str, ensure_ascii=False).encode())
        if size > MAX_DOCUMENT_BYTES:
            message = (
                f"the {kind} is {size // 1024} KiB; at most {MAX_DOCUMENT_BYTES // 1024} KiB can be stored"
            )
            raise SpecError([Problem("DocumentTooLarge", message, file, 1)])
        self.raw = raw
        self.file = file
        self.problems: list[Problem] = []
        self.notes: list[str] = []

    def line(self, path: str) -> int | None:
        node: Any = self.raw
        line = getattr(node, "line", None)
        for part in path.split("."):
            if not isinstance(node, YamlMap) or part not in node:
                break
            line = node.line_of(part)
            node = node[part]
        return line

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem("InvalidField", f"{path}: {message}", self.file, self.line(path)))

    def note(self, path: str, message: str) -> None:
        self.notes.append(f"{path}: {message}")

    def done(self) -> None:
        if self.problems:
            raise SpecError(self.problems)

    # -- typed getters: each reports a problem and returns the default on a bad value ---------

    def string(self, data: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str | None:
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(path, f"must be a string, got {_kind(value)}{_yaml11_hint(value)}")
            return default
        return self.bounded(path, str(value), default)

    def choice(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        allowed: tuple[str, ...],
        default: str | None = None,
        *,
        exact: bool = False,
    ) -> str | None:
        """One of Azure's enum values, matched without regard to case unless ``exact`` (as
        ``azure-ai-ml`` does: ``auth_mode`` is the one enum it matches exactly)."""
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            fold = (lambda text: text) if exact else str.lower
            found = next((a for a in allowed if fold(a) == fold(value.strip())), None)
            if found is not None:
                return found
        self.error(path, f"must be one of {', '.join(allowed)}, got {_shown(value)}{_yaml11_hint(value)}")
        return default

    def bounded(self, path: str, text: str, default: str | None) -> str | None:
        if len(text) > MAX_FIELD_CHARS:
            self.error(path, f"is {len(text):,} characters long; at most {MAX_FIELD_CHARS:,} are allowed")
            return default
        return text

    def integer(self, data: Mapping[str, Any], key: str, path: str, default: int, low: int, high: int) -> int:
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be a whole number, got {_shown(value)}{_yaml11_hint(value)}")
            return default
        if not low <= value <= high:
            self.error(path, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def number(
        self, data: Mapping[str, Any], key: str, path: str, default: float, low: float, high: float
    ) -> float:
        value = data.get(key)
        if value is None:
            return default
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            self.error(path, f"must be a number, got {value!r}")
            return default
        if not low <= number <= high:
            self.error(path, f"must be between {low} and {high}, got {number}")
            return default
        return number

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.error(path, f"must be true or false, got {value!r}")
            return default
        return value

    def mapping(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, got {_kind(value)}")
            return {}
        return value

    def string_map(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        result = {}
        for name, value in self.mapping(data, key, path).items():
            if isinstance(value, dict | list):
                self.error(f"{path}.{name}", f"must be a string, got {_kind(value)}; quote it to pass text")
            else:
                text = self.bounded(f"{path}.{name}", "" if value is None else _scalar_text(value), None)
                if text is not None:
                    result[str(name)] = text
                if isinstance(value, bool):  # Azure does the same, silently: say it once
                    self.note(f"{path}.{name}", f"YAML 1.1 reads it as {text}; quote it to keep the text")
        return result

    def name(self, data: Mapping[str, Any], key: str, path: str, required: bool = True) -> str:
        value = self.string(data, key, path)
        if value is None:
            if required:
                self.error(path, f"is required ({NAME_HELP})")
            return ""
        if not NAME_RULE.match(value):
            self.error(path, f"{value!r} is not a valid name: {NAME_HELP}")
        return value

    def percentages(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, int]:
        result = {}
        for name, value in self.mapping(data, key, path).items():
            result[str(name)] = self.integer({name: value}, name, f"{path}.{name}", 0, 0, 100)
        return result

    def unknown(
        self,
        data: Mapping[str, Any],
        known: set[str],
        ignored: Mapping[str, str],
        prefix: str = "",
        what: str = "",
    ) -> None:
        """Note the fields in ``ignored``; a field in neither is an error naming the nearest one."""
        fields = set(known) | set(ignored)
        for key in data:
            path = f"{prefix}{key}"
            if key in ignored:
                self.note(path, ignored[key])
            elif key not in known and key != "$schema":
                nearest = difflib.get_close_matches(str(key), sorted(fields), n=1, cutoff=0.6)
                hint = f"did you mean {nearest[0]!r}?" if nearest else "docs/endpoints.md lists the fields"
                where = what or (f"{prefix.rstrip('.')}" if prefix else "this document")
                self.error(path, f"is not a field of {where}; {hint}")


def _kind(value: Any) -> str:
    for kind, text in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list")):
        if isinstance(value, kind):  # YAML's line-numbered containers too
            return text
    return type(value).__name__


def _scalar_text(value: Any) -> str:
    """A variable's or tag's value as text: YAML 1.1 values as Azure sends them (JSON spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return (
        repr(value)
        if isinstance(value, str)
        else str(value)
        if isinstance(value, int | float)
        else _kind(value)
    )


def _yaml11_hint(value: Any) -> str:
    """Azure files are YAML 1.1: an unquoted on/off/yes/no is a boolean, 010 is octal, 1:30 is 90."""
    if isinstance(value, bool):
        return " (YAML 1.1 reads unquoted yes/no/on/off as booleans; quote the value)"
    return ""


def _extras(raw: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: to_plain(raw[k]) for k in keys if k in raw}


# -- --set --------------------------------------------------------------------------------


def apply_set(
    raw: Mapping[str, Any],
    assignments: list[str],
    *,
    force_string: bool = False,
    add: list[tuple[str, str]] | None = None,
    remove: list[str] | None = None,
) -> dict[str, Any]:
    """``az``'s generic update flags, applied in az's order: ``--set path.to.field=value`` (the
    value read as a YAML scalar, or kept as text with ``--force-string``), ``--add path value``
    (appended to a list; ``key=value`` into a mapping) and ``--remove path`` (a field, or a list
    item by index)."""
    result = copy.deepcopy(raw) if isinstance(raw, YamlMap) else to_plain(dict(raw))  # keeps lines
    for item in assignments:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise SpecError([Problem("InvalidSet", f"--set expects path=value, got {item!r}")])
        parent, last = _walk(result, path.strip(), create=True, flag="--set")
        parent[last] = _set_value(path.strip(), text, force_string, "--set")
    for path, value in add or []:
        parent, last = _walk(result, path.strip(), create=True, flag="--add")
        target = parent.get(last) if isinstance(parent, dict) else None
        if isinstance(target, list):
            target.append(_set_value(path, value, force_string, "--add"))
        else:
            key, sep, text = value.partition("=")
            if not sep or not key:
                raise SpecError([Problem("InvalidSet", f"--add {path}: expects key=value for a mapping")])
            mapping = parent.setdefault(last, {}) if isinstance(parent, dict) else None
            if not isinstance(mapping, dict):
                raise SpecError([Problem("InvalidSet", f"--add {path}: is neither a list nor a mapping")])
            mapping[key] = _set_value(f"{path}.{key}", text, force_string, "--add")
    for path in remove or []:
        parent, last = _walk(result, path.strip(), create=False, flag="--remove")
        try:
            del parent[int(last) if isinstance(parent, list) else last]
        except (KeyError, IndexError, ValueError):
            raise SpecError([Problem("InvalidSet", f"--remove {path}: no such field")]) from None
    return result


def _walk(root: dict[str, Any], path: str, *, create: bool, flag: str) -> tuple[Any, str]:
    """The container holding the last part of ``path`` (``a.b.0.c``), and that part."""
    parts = path.split(".")
    node: Any = root
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict | list):
            if not create or not isinstance(node, dict):
                raise SpecError([Problem("InvalidSet", f"{flag} {path}: no such field")])
            child = node[part] = {}
        node = child
    return node, parts[-1]


def _set_value(path: str, text: str, force_string: bool, flag: str) -> Any:
    if force_string or not text:
        return text
    try:
        return parse_yaml(text, flag)  # az passes flag values as text, so 010 is 10 and yes stays "yes"
    except FlowError as exc:
        detail = exc.problems[0].message
        message = f"{flag} {path}: the value is not valid YAML ({detail}); quote it or use --force-string"
        raise SpecError([Problem("InvalidSet", message)]) from None


def read_yaml(text: str, file: str) -> Any:
    """Parse an Azure YAML document as ``azure-ai-ml`` does (YAML 1.1 scalars); a syntax error
    becomes a SpecError with file and line."""
    try:
        return parse_yaml(text, file, yaml11=True)
    except FlowError as exc:
        raise SpecError(exc.problems) from None


# -- model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str | None
    path: Path
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


_MODEL_FIELDS = {"name", "version", "path", "description", "tags", "properties", "type"}
_MODEL_IGNORED = {
    "stage": "model stages are an Azure registry feature; kept and ignored",
    "datastore": "models are snapshotted to the flowport home; kept and ignored",
    "flavors": "kept and ignored",
    "job_name": "kept and ignored",
    "intellectual_property": "kept and ignored",
    "allowed_deployment_templates": "kept and ignored",
    "default_deployment_template": "kept and ignored",
    "system_metadata": "kept and ignored",
    **dict.fromkeys(READ_ONLY, _READ_ONLY_NOTE),
}


def _name_and_version(r: _Reader, raw: Mapping[str, Any], kind: str) -> tuple[str, str | None]:
    """A versioned asset's ``name`` (required) and ``version`` (optional), checked as Azure names them."""
    name = r.string(raw, "name", "name") or ""
    if not name:
        r.error("name", "is required")
    elif not MODEL_NAME_RULE.match(name):
        r.error("name", f"{name!r} is not a valid {kind} name: letters, digits, '_', '.', '-', up to 255")
    version = r.string(raw, "version", "version")
    if version is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", version):
        r.error("version", f"{version!r} is not a valid version: letters, digits, '_', '.', '-'")
    return name, version


def parse_model(raw: Any, file: str | None = None, base_dir: Path | None = None) -> ModelSpec:
    r = _Reader(raw, file, "model")
    name, version = _name_and_version(r, raw, "model")
    path_text = r.string(raw, "path", "path")
    if not path_text:
        r.error("path", "is required: the flow folder to register")
    kind = r.choice(raw, "type", "type", MODEL_TYPES)
    if kind not in (None, "custom_model"):
        r.note("type", f"{kind!r} is treated as a prompt flow folder (custom_model)")
    r.unknown(raw, _MODEL_FIELDS, _MODEL_IGNORED, what="a model")
    description = r.string(raw, "description", "description", "") or ""
    tags = r.string_map(raw, "tags", "tags")
    properties = r.string_map(raw, "properties", "properties")
    r.done()
    path = Path(str(path_text)).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return ModelSpec(name, version, path.resolve(), description, tags, properties, tuple(r.notes))


def parse_model_reference(text: str) -> tuple[str, str | None]:
    """``azureml:name:version``, ``name:version``, ``name@latest`` or ``name`` -> (name, version)."""
    return parse_reference(text, "model")


# -- environment --------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentSpec:
    """Azure's environment YAML: ``name``, ``version``, ``image``, ``conda_file``, ``build`` ..."""

    name: str
    version: str | None
    image: str | None = None
    conda_file: Path | None = None
    """A conda file's path; ``conda_inline`` holds one given as a mapping instead."""
    conda_inline: dict[str, Any] | None = None
    build_path: Path | None = None
    dockerfile_path: str = "Dockerfile"
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    """``os_type``, ``inference_config``, ``properties``: kept as given."""
    base_dir: Path | None = None
    """Where the file is: local paths in an inline conda mapping are relative to it."""
    notes: tuple[str, ...] = ()


_ENVIRONMENT_KEPT = ("os_type", "inference_config", "properties")
_ENVIRONMENT_IGNORED = {
    "datastore": "the build folder is snapshotted to the flowport home; kept and ignored",
    **dict.fromkeys(READ_ONLY, _READ_ONLY_NOTE),
}


def parse_environment(raw: Any, file: str | None = None, base_dir: Path | None = None) -> EnvironmentSpec:
    r = _Reader(raw, file, "environment")
    name, version = _name_and_version(r, raw, "environment")
    image = r.string(raw, "image", "image")
    conda = raw.get("conda_file")
    conda_file, conda_inline = None, None
    if isinstance(conda, dict):
        conda_inline = to_plain(conda)
    elif isinstance(conda, str):
        conda_file = _local_path(conda, base_dir)
    elif conda is not None:
        r.error("conda_file", f"must be the path of a conda YAML file or its mapping, got {_kind(conda)}")
    build = r.mapping(raw, "build", "build")
    build_path = None
    if "build" in raw:
        r.unknown(build, {"path", "dockerfile_path"}, {}, "build.")
        path_text = r.string(build, "path", "build.path")
        if not path_text:
            r.error("build.path", "is required: the folder holding the Dockerfile (the build context)")
        else:
            build_path = _local_path(path_text, base_dir)
    dockerfile = r.string(build, "dockerfile_path", "build.dockerfile_path", "Dockerfile") or "Dockerfile"
    if Path(dockerfile).is_absolute() or ".." in Path(dockerfile).parts:
        r.error("build.dockerfile_path", f"{dockerfile!r} must be a path inside build.path")
    if image is None and "build" not in raw:
        r.error("image", "one of image or build is required (as Azure requires)")
    if image is not None and "build" in raw:
        r.error("build", "give image or build, not both (as Azure requires)")
    if (conda_file or conda_inline) and image is None:
        r.error("conda_file", "needs image (the base it is installed on, as Azure requires)")
    extras = _extras(raw, _ENVIRONMENT_KEPT)
    if "os_type" in raw:
        extras["os_type"] = r.choice(raw, "os_type", "os_type", ("linux", "windows"), "linux")
        if extras["os_type"] == "windows":
            r.note("os_type", "windows: instances run on this machine's operating system; kept as a label")
    if "inference_config" in raw:
        r.note("inference_config", "instances serve flowport's routes (/score, /health); kept as a label")
    r.unknown(
        raw,
        {"name", "version", "description", "tags", "image", "conda_file", "build", *_ENVIRONMENT_KEPT},
        _ENVIRONMENT_IGNORED,
        what="an environment",
    )
    description = r.string(raw, "description", "description", "") or ""
    tags = r.string_map(raw, "tags", "tags")
    r.done()
    return EnvironmentSpec(
        name=name,
        version=version,
        image=image,
        conda_file=conda_file,
        conda_inline=conda_inline,
        build_path=build_path,
        dockerfile_path=dockerfile,
        description=description,
        tags=tags,
        extras=extras,
        base_dir=base_dir,
        notes=tuple(r.notes),
    )


def parse_reference(text: str, kind: str = "model") -> tuple[str, str | None]:
    """``azureml:name:version``, ``name:version``, ``name@latest`` or ``name`` -> (name, version)."""
    ref = text.strip()
    if ref.startswith("azureml:"):
        ref = ref[len("azureml:") :]
    if ref.startswith("//") or "/" in ref:
        raise SpecError(
            [Problem("InvalidField", f"{kind}: {text!r} is not a {kind} reference; use name:version")]
        )
    if "@" in ref:
        name, _, label = ref.partition("@")
        if label != "latest":
            raise SpecError(
                [Problem("InvalidField", f"{kind}: label {label!r} is not supported; use @latest")]
            )
        return name, None
    name, _, version = ref.partition(":")
    return name, version or None


# -- endpoint -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    auth_mode: str = "key"
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    traffic: dict[str, int] | None = None
    """None: not given (keep what the endpoint has)."""
    mirror_traffic: dict[str, int] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    """Azure-only fields, kept as given."""
    notes: tuple[str, ...] = ()
    compute: str | None = None
    """The name of the compute its deployments run on (``compute: azureml:NAME``); None: local."""


_ENDPOINT_FIELDS = {"name", "auth_mode", "description", "tags", "traffic", "mirror_traffic", "compute"}
_ENDPOINT_AZURE_ONLY = ("identity", "properties", "public_network_access", "kind", "location")
_AZURE_ONLY_NOTE = "Azure-only; kept and not applicable on flowport"


def parse_endpoint(raw: Any, file: str | None = None) -> EndpointSpec:
    r = _Reader(raw, file, "endpoint")
    name = r.name(raw, "name", "name")
    auth_mode = r.choice(raw, "auth_mode", "auth_mode", AUTH_MODES, "key", exact=True) or "key"
    traffic = r.percentages(raw, "traffic", "traffic") if "traffic" in raw else None
    mirror = r.percentages(raw, "mirror_traffic", "mirror_traffic") if "mirror_traffic" in raw else None
    if mirror:
        check_mirror_shape(mirror, r.error)
    extras = _extras(raw, _ENDPOINT_AZURE_ONLY)
    if "public_network_access" in raw:
        if "compute" in raw:
            r.error("public_network_access", "applies to managed endpoints only (this one names a compute)")
        access = r.choice(raw, "public_network_access", "public_network_access", NETWORK_ACCESS)
        extras["public_network_access"] = access
    ignored = {**dict.fromkeys(_ENDPOINT_AZURE_ONLY, _AZURE_ONLY_NOTE), **_read_only(raw)}
    r.unknown(raw, _ENDPOINT_FIELDS, ignored, what="an endpoint")
    description = r.string(raw, "description", "description", "") or ""
    tags = r.string_map(raw, "tags", "tags")
    compute = r.string(raw, "compute", "compute")
    if compute is not None:
        compute = compute_reference(compute)
        if not COMPUTE_NAME_RULE.match(compute):
            r.error("compute", f"{compute!r} is not a compute: use azureml:NAME (flowport compute list)")
    r.done()
    return EndpointSpec(name, auth_mode, description, tags, traffic, mirror, extras, tuple(r.notes), compute)


def _read_only(raw: Mapping[str, Any]) -> dict[str, str]:
    """The read-only fields a shown document carries: ignored (noted) when it is applied again."""
    return {key: _READ_ONLY_NOTE for key in READ_ONLY if key in raw}


def compute_reference(text: str) -> str:
    """``azureml:NAME``, an Azure resource id ``.../computes/NAME`` or ``NAME`` -> ``NAME``."""
    ref = text.strip().removeprefix("azureml:")
    return ref.rpartition("/computes/")[2] if "/computes/" in ref else ref


# -- compute ------------------------------------------------------------------------------

COMPUTE_TYPES = ("local", "ray", "kubernetes")
COMPUTE_NAME_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,31}$")
COMPUTE_NAME_HELP = "2-32 characters: a letter first, then letters, digits and dashes"


@dataclass(frozen=True)
class ComputeSpec:
    name: str
    type: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    address: str = ""
    """``ray``: the cluster's head (``HOST:PORT``, or ``ray://HOST:PORT`` through Ray Client)."""
    kubeconfig: str = ""
    context: str = ""
    namespace: str = ""
    notes: tuple[str, ...] = ()


_COMPUTE_FIELDS = {"name", "type", "description", "tags", "address", "kubeconfig", "context", "namespace"}
_COMPUTE_AZURE_ONLY = ("resource_id", "identity", "location", "size", "min_instances", "max_instances")


def parse_compute(raw: Any, file: str | None = None) -> ComputeSpec:
    """A compute target: ``local``, ``ray`` (``address``) or ``kubernetes`` (``kubeconfig``,
    ``context``, ``namespace``). Azure's ``kubernetes`` compute YAML is read as is."""
    r = _Reader(raw, file, "compute")
    name = r.string(raw, "name", "name") or ""
    if not name:
        r.error("name", f"is required ({COMPUTE_NAME_HELP})")
    elif not COMPUTE_NAME_RULE.match(name):
        r.error("name", f"{name!r} is not a valid compute name: {COMPUTE_NAME_HELP}")
    elif name.lower() == "local":
        r.error("name", "'local' is the built-in compute of this server; pick another name")
    kind = (r.string(raw, "type", "type") or "").lower()
    if kind not in COMPUTE_TYPES:
        r.error("type", f"must be one of {', '.join(COMPUTE_TYPES)}, got {kind or 'nothing'!r}")
    address = r.string(raw, "address", "address", "") or ""
    if kind == "ray" and not address:
        r.error("address", "a ray compute needs the cluster's address (HOST:PORT of its head)")
    if kind != "ray" and address:
        r.error("address", f"only a ray compute has an address, this one is {kind}")
    kubeconfig = r.string(raw, "kubeconfig", "kubeconfig", "") or ""
    context = r.string(raw, "context", "context", "") or ""
    namespace = r.string(raw, "namespace", "namespace", "") or ""
    if kind != "kubernetes":
        for key, value in (("kubeconfig", kubeconfig), ("context", context), ("namespace", namespace)):
            if value:
                r.error(key, f"only a kubernetes compute has a {key}, this one is {kind}")
    elif namespace and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        r.error("namespace", f"{namespace!r} is not a Kubernetes namespace (lowercase letters, digits, '-')")
    r.unknown(raw, _COMPUTE_FIELDS, dict.fromkeys(_COMPUTE_AZURE_ONLY, _AZURE_ONLY_NOTE))
    description = r.string(raw, "description", "description", "") or ""
    tags = r.string_map(raw, "tags", "tags")
    r.done()
    return ComputeSpec(name, kind, description, tags, address, kubeconfig, context, namespace, tuple(r.notes))


def check_mirror_shape(mirror: Mapping[str, int], error: Any) -> None:
    live = {k: v for k, v in mirror.items() if v}
    if len(live) > 1:
        error("mirror_traffic", f"can mirror to one deployment only, got {', '.join(live)}")
    for name, value in live.items():
        if value > 50:
            error(f"mirror_traffic.{name}", f"at most 50 percent can be mirrored, got {value}")


def parse_traffic_flag(text: str, flag: str) -> dict[str, int]:
    """``--traffic "blue=90 green=10"`` -> ``{"blue": 90, "green": 10}``."""
    result = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise SpecError([Problem("InvalidTraffic", f"{flag} expects name=percent pairs, got {item!r}")])
        result[name] = int(value)
    return result


# -- deployment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    endpoint_name: str | None
    model_ref: str | None
    """``name:version`` of a registered model, or None when ``model_path`` is given."""
    model_path: Path | None
    model_properties: dict[str, str] = field(default_factory=dict)
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    instance_type: str | None = None
    instance_count: int = 1
    environment_variables: dict[str, str] = field(default_factory=dict)
    secret_environment_variables: tuple[str, ...] = ()
    """flowport's extension: variables whose values are secret whatever their names."""
    request_timeout_ms: int = 5000
    max_concurrent_requests_per_instance: int = 10
    liveness_probe: Probe = field(default_factory=Probe)
    readiness_probe: Probe = field(default_factory=Probe)
    data_collector: DataCollection | None = None
    code_path: Path | None = None
    """``code_configuration.code``: the folder holding the scoring script."""
    scoring_script: str | None = None
    """``code_configuration.scoring_script``: set, the deployment runs it (``init()``/``run()``)."""
    conda_file: Path | None = None
    """``environment.conda_file``: its pip packages go into the deployment's virtualenv."""
    conda_inline: dict[str, Any] | None = None
    """``environment.conda_file`` given as the conda mapping itself."""
    base_dir: Path | None = None
    """The deployment file's folder: an inline conda mapping's local paths are relative to it."""
    build_path: Path | None = None
    """``environment.build.path``: its requirements.txt and ``RUN pip install`` lines apply."""
    dockerfile_path: str = "Dockerfile"
    environment_ref: str | None = None
    """``environment: azureml:name:version`` (or ``name@latest``): a registered environment."""
    environment_where: str | None = None
    """Where that reference is written (``file:line``), for the error when it does not exist."""
    extras: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


AZURE_TRACES_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
"""In a deployment's variables: its traces go to Azure Monitor (``tracing.setup`` reads it)."""

_DEPLOYMENT_FIELDS = {
    "name", "endpoint_name", "model", "description", "tags", "instance_type", "instance_count",
    "environment_variables", "request_settings", "liveness_probe", "readiness_probe", "data_collector",
    "secret_environment_variables", "code_configuration", "environment", "scale_settings",
}  # fmt: skip
_DEPLOYMENT_KEPT = {
    "app_insights_enabled": (
        "traces go to flowport's built-in store (flowport trace list); set "
        "APPLICATIONINSIGHTS_CONNECTION_STRING in environment_variables to send them to Azure Monitor "
        "(docs/traces.md)"
    ),
    "egress_public_network_access": _AZURE_ONLY_NOTE,
    "type": "every deployment runs on the configured flowport runtime; kept and ignored",
    "properties": "kept",
    "resources": "kept; used by `export --format kubernetes` (requests and limits)",
    "model_mount_path": "instances read the model from its snapshot; kept and ignored",
    "private_network_connection": _AZURE_ONLY_NOTE,
}
_MANAGED_ONLY = ("egress_public_network_access", "private_network_connection")
_KUBERNETES_ONLY = ("resources",)
_TARGET_UTILIZATION = ("polling_interval", "target_utilization_percentage", "min_instances", "max_instances")
_TARGET_UTILIZATION += ("cooldown_seconds",)
"""Azure's fields, and flowport's ``cooldown_seconds`` (low load this long before scaling down)."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def parse_deployment(raw: Any, file: str | None = None, base_dir: Path | None = None) -> DeploymentSpec:
    r = _Reader(raw, file, "deployment")
    name = r.name(raw, "name", "name")
    endpoint_name = r.name(raw, "endpoint_name", "endpoint_name", required=False) or None
    code_path, scoring_script = _code_configuration(r, raw, base_dir)
    model_ref, model_path, model_properties = _model_field(r, raw, base_dir, scoring_script is None)
    environment = _environment(r, raw, base_dir)
    settings = r.mapping(raw, "request_settings", "request_settings")
    if "max_queue_wait_ms" in settings:
        r.integer(settings, "max_queue_wait_ms", "request_settings.max_queue_wait_ms", 500, 1, 2**31 - 1)
        r.note("request_settings.max_queue_wait_ms", "deprecated by Azure; flowport queues for up to 500 ms")
    r.unknown(
        settings,
        {"request_timeout_ms", "max_concurrent_requests_per_instance", "max_queue_wait_ms"},
        {},
        "request_settings.",
    )
    collector = _data_collector(r, raw)
    variables = r.string_map(raw, "environment_variables", "environment_variables")
    _connection_references(r, variables)
    flow = "code_configuration" not in raw  # a prompt flow, not a scoring script: the guide's defaults
    spec = DeploymentSpec(
        name=name,
        endpoint_name=endpoint_name,
        model_ref=model_ref,
        model_path=model_path,
        model_properties=model_properties,
        description=r.string(raw, "description", "description", "") or "",
        tags=r.string_map(raw, "tags", "tags"),
        instance_type=r.string(raw, "instance_type", "instance_type"),
        instance_count=r.integer(raw, "instance_count", "instance_count", 1, 1, 50),
        environment_variables=variables,
        secret_environment_variables=_secret_names(r, raw, variables),
        request_timeout_ms=r.integer(
            settings,
            "request_timeout_ms",
            "request_settings.request_timeout_ms",
            5000,
            1,
            FLOW_TIMEOUT_MS if flow else SCRIPT_TIMEOUT_MS,
        ),
        max_concurrent_requests_per_instance=r.integer(
            settings,
            "max_concurrent_requests_per_instance",
            "request_settings.max_concurrent_requests_per_instance",
            10 if flow else 1,
            1,
            1000,
        ),
        liveness_probe=_probe(r, raw, "liveness_probe"),
        readiness_probe=_probe(r, raw, "readiness_probe"),
        data_collector=collector,
        code_path=code_path,
        scoring_script=scoring_script,
        **environment,
        extras=_deployment_extras(r, raw),
    )
    if spec.instance_type:
        r.note("instance_type", f"{spec.instance_type!r} is kept as a label; instances run on this machine")
    if variables.get(AZURE_TRACES_ENV) and not _installed("azure.monitor.opentelemetry.exporter"):
        r.note(
            f"environment_variables.{AZURE_TRACES_ENV}",
            "exporting traces to Azure Monitor needs azure-monitor-opentelemetry-exporter "
            "(pip install 'flowport[azure]'); until then they go to the built-in store",
        )
    r.unknown(raw, _DEPLOYMENT_FIELDS, {**_DEPLOYMENT_KEPT, **_read_only(raw)}, what="a deployment")
    r.done()
    return DeploymentSpec(**{**spec.__dict__, "notes": tuple(r.notes)})


def _deployment_extras(r: _Reader, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The Azure-only fields, kept as given once their enums and shapes are checked (normalised)."""
    extras = _extras(raw, (*_DEPLOYMENT_KEPT, "code_configuration", "environment"))
    kind = r.choice(raw, "type", "type", DEPLOYMENT_TYPES, "managed") or "managed"
    if "type" in raw:
        extras["type"] = kind
    kubernetes_only = (
        "Azure takes it on type: kubernetes deployments only; kept for export --format kubernetes"
    )
    for key in _MANAGED_ONLY if kind == "kubernetes" else _KUBERNETES_ONLY:
        if key in raw and kind == "kubernetes":
            r.error(key, f"applies to managed deployments only (this one is type: {kind})")
        elif key in raw:
            r.note(key, kubernetes_only)
    if "egress_public_network_access" in raw:
        extras["egress_public_network_access"] = r.choice(
            raw, "egress_public_network_access", "egress_public_network_access", NETWORK_ACCESS
        )
    if "app_insights_enabled" in raw:
        extras["app_insights_enabled"] = r.boolean(raw, "app_insights_enabled", "app_insights_enabled", False)
    if "scale_settings" in raw:
        scale = r.mapping(raw, "scale_settings", "scale_settings")
        allowed = SCALE_TYPES["kubernetes"]
        scale_type = r.choice(scale, "type", "scale_settings.type", allowed, "default")
        if "type" not in scale:
            r.error("scale_settings.type", f"is required: one of {', '.join(allowed)}")
        elif scale_type not in SCALE_TYPES[kind]:
            r.note(
                "scale_settings.type",
                f"{scale_type}: Azure takes it on type: kubernetes deployments only; "
                "flowport autoscales with it, and export --format kubernetes makes it an HPA",
            )
        fields = set(_TARGET_UTILIZATION) if scale_type == "target_utilization" else set()
        r.unknown(scale, {"type", *fields}, {}, "scale_settings.")
        extras["scale_settings"] = {
            **to_plain(scale),
            **({"type": scale_type} if scale_type else {}),
            **(_target_utilization(r, scale) if fields else {}),
        }
    return extras


def _target_utilization(r: _Reader, scale: Mapping[str, Any]) -> dict[str, Any]:
    """The given ``target_utilization`` fields, checked and normalised (Azure's defaults apply later)."""
    bounds = {"min_instances": (1, 50), "max_instances": (1, 50), "target_utilization_percentage": (1, 100)}
    bounds["polling_interval"] = (1, 3600)
    given: dict[str, Any] = {}
    for key, (low, high) in bounds.items():
        if key in scale:
            given[key] = r.integer(scale, key, f"scale_settings.{key}", low, low, high)
    if "cooldown_seconds" in scale:
        given["cooldown_seconds"] = r.number(
            scale, "cooldown_seconds", "scale_settings.cooldown_seconds", 60, 0, 3600
        )
    low, high = given.get("min_instances", 1), given.get("max_instances", 1)
    if high < low:
        r.error(
            "scale_settings.max_instances",
            f"({high}) is below min_instances ({low}); raise it or lower min_instances",
        )
    return given


def _connection_references(r: _Reader, variables: Mapping[str, str]) -> None:
    """``${{azureml://connections/NAME[/target|/credentials/X|/metadata/X]}}`` values must be whole."""
    for key, value in variables.items():
        if "azureml://connections" in value and parse_connection_reference(value) is None:
            r.error(
                f"environment_variables.{key}",
                f"{value!r} is not a connection reference; write ${{{{azureml://connections/NAME}}}} "
                "(or .../NAME/target, .../NAME/credentials/FIELD, .../NAME/metadata/FIELD)",
            )


def _secret_names(r: _Reader, raw: Mapping[str, Any], variables: Mapping[str, str]) -> tuple[str, ...]:
    """``secret_environment_variables: [NAME, ...]``: names of ``environment_variables`` to keep secret."""
    names = raw.get("secret_environment_variables")
    if names is None:
        return ()
    path = "secret_environment_variables"
    if not isinstance(names, list):
        r.error(path, f"must be a list of names from environment_variables, got {_kind(names)}")
        return ()
    if not all(isinstance(n, str) for n in names):
        r.error(path, "must list names of environment_variables, each a string")
        return ()
    for name in names:
        if name not in variables:
            r.error(
                path, f"{name!r} is not in environment_variables; list only variables the deployment sets"
            )
    return tuple(dict.fromkeys(names))


def _local_path(text: str, base_dir: Path | None) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path.resolve()


def _code_configuration(
    r: _Reader, raw: Mapping[str, Any], base_dir: Path | None
) -> tuple[Path | None, str | None]:
    """``code_configuration: {code, scoring_script}``: the folder and the script in it."""
    if raw.get("code_configuration") is None:
        return None, None
    data = r.mapping(raw, "code_configuration", "code_configuration")
    code = r.string(data, "code", "code_configuration.code")
    script = r.string(data, "scoring_script", "code_configuration.scoring_script")
    if not code:
        r.error("code_configuration.code", "is required: the folder holding the scoring script")
    if not script:
        r.error("code_configuration.scoring_script", "is required: the script's path inside code (score.py)")
    elif Path(script).is_absolute() or ".." in Path(script).parts:
        r.error("code_configuration.scoring_script", f"{script!r} must be a path inside the code folder")
    r.unknown(data, {"code", "scoring_script"}, {}, "code_configuration.")
    if not code or not script:
        return None, None
    return _local_path(code, base_dir), script


_ENVIRONMENT_FIELDS = {
    "conda_file", "name", "version", "description", "tags", "properties", "image", "build",
    "inference_config", "os_type", "datastore",
}  # fmt: skip


def _environment(r: _Reader, raw: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """``environment``: a registered one by reference, or inline: its ``conda_file`` and ``build``
    apply (a local process takes their pip packages); ``image`` is a label."""
    environment = raw.get("environment")
    if environment is None:
        return {}
    if isinstance(environment, str):
        try:
            name, version = parse_reference(environment, "environment")
        except SpecError as exc:
            r.error("environment", exc.problems[0].message.removeprefix("environment: "))
            return {}
        line = r.line("environment")
        where = f"{r.file}:{line}" if r.file and line else r.file or (f"line {line}" if line else None)
        return {"environment_ref": f"{name}:{version}" if version else name, "environment_where": where}
    data = r.mapping(raw, "environment", "environment")
    unapplied = [key for key in ("image", "inference_config", "os_type") if key in data]
    if unapplied:
        r.note("environment", f"{', '.join(unapplied)}: instances run as local processes; kept as labels")
    r.unknown(data, _ENVIRONMENT_FIELDS, {}, "environment.")
    found: dict[str, Any] = {}
    build = r.mapping(data, "build", "environment.build")
    if build:
        r.unknown(build, {"path", "dockerfile_path"}, {}, "environment.build.")
        path = r.string(build, "path", "environment.build.path")
        dockerfile = r.string(build, "dockerfile_path", "environment.build.dockerfile_path", "Dockerfile")
        if not path:
            r.error("environment.build.path", "is required: the folder holding the Dockerfile")
        elif dockerfile and (Path(dockerfile).is_absolute() or ".." in Path(dockerfile).parts):
            r.error("environment.build.dockerfile_path", f"{dockerfile!r} must be a path inside build.path")
        else:
            found["build_path"] = _local_path(path, base_dir)
            found["dockerfile_path"] = dockerfile or "Dockerfile"
    conda = data.get("conda_file")
    if conda is None:
        return found
    if isinstance(conda, dict):  # the conda file's content, inline (as Azure takes it)
        return {**found, "conda_inline": to_plain(conda), "base_dir": base_dir}
    if not isinstance(conda, str):
        r.error("environment.conda_file", f"must be a conda YAML file's path or mapping, got {_kind(conda)}")
        return found
    return {**found, "conda_file": _local_path(conda, base_dir)}


def _model_field(
    r: _Reader, raw: Mapping[str, Any], base_dir: Path | None, required: bool = True
) -> tuple[str | None, Path | None, dict[str, str]]:
    model = raw.get("model")
    if model is None:
        if required:
            r.error(
                "model",
                "is required: a registered model (azureml:name:version) or an inline path; "
                "or give code_configuration to run a scoring script",
            )
        return None, None, {}
    if isinstance(model, str):
        try:
            name, version = parse_model_reference(model)
        except SpecError as exc:
            r.error("model", exc.problems[0].message.removeprefix("model: "))
            return None, None, {}
        return f"{name}:{version}" if version else name, None, {}
    if not isinstance(model, dict):
        r.error("model", f"must be a model reference or a mapping with a path, got {_kind(model)}")
        return None, None, {}
    path_text = r.string(model, "path", "model.path")
    if not path_text:
        r.error("model.path", "is required for an inline model: the flow folder")
        return None, None, {}
    r.choice(model, "type", "model.type", MODEL_TYPES)
    r.unknown(model, _MODEL_FIELDS, _MODEL_IGNORED, "model.", "an inline model")
    return None, _local_path(path_text, base_dir), r.string_map(model, "properties", "model.properties")


def _probe(r: _Reader, raw: Mapping[str, Any], key: str) -> Probe:
    data = r.mapping(raw, key, key)
    defaults = Probe()
    r.unknown(data, set(defaults.__dict__), {}, f"{key}.")
    return Probe(
        **{
            name: r.integer(
                data, name, f"{key}.{name}", int(default), 0 if name == "initial_delay" else 1, 3600
            )
            for name, default in defaults.__dict__.items()
        }
    )


def _data_collector(r: _Reader, raw: Mapping[str, Any]) -> DataCollection | None:
    if "data_collector" not in raw:
        return None
    data = r.mapping(raw, "data_collector", "data_collector")
    collections = r.mapping(data, "collections", "data_collector.collections")
    enabled = {}
    for name, body in collections.items():
        path = f"data_collector.collections.{name}"
        if name not in ("request", "response"):
            r.note(path, "flowport collects 'request' and 'response'; kept and ignored")
            continue
        body = body if isinstance(body, dict) else {"enabled": body}
        enabled[name] = r.boolean(body, "enabled", f"{path}.enabled", False)
        if "data" in body:
            r.note(f"{path}.data", "records go to JSONL under the flowport home; kept and ignored")
    matched = r.choice(data, "rolling_rate", "data_collector.rolling_rate", ROLLING_RATES, "Hour")
    ignored = {"request_logging": "request headers are not logged; kept and ignored"}
    r.unknown(data, {"collections", "rolling_rate", "sampling_rate"}, ignored, "data_collector.")
    return DataCollection(
        request=enabled.get("request", False),
        response=enabled.get("response", False),
        sampling_rate=r.number(data, "sampling_rate", "data_collector.sampling_rate", 1.0, 0.0, 1.0),
        rolling_rate=matched or "Hour",
    )
