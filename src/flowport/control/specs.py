"""Azure ML's model, endpoint and deployment YAML, read as Azure means it.

Every field Azure defines is accepted. Fields that cannot apply on flowport (``identity``,
``instance_type``, ``environment.image`` ...) are kept and reported once as notes; unknown
fields are notes too. Invalid values are errors naming the field, the file and the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowport.flow.errors import FlowError, Problem
from flowport.flow.yaml import YamlMap, parse_yaml, to_plain
from flowport.gateway.routes import DataCollection
from flowport.runtime.base import Probe

NAME_RULE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){2,31}$")
NAME_HELP = "3-32 characters: a letter first, then letters, digits and single dashes, not ending in a dash"
MODEL_NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
ROLLING_RATES = ("Minute", "Hour", "Day", "Month", "Year")
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
            self.error(path, f"must be a string, got {_kind(value)}")
            return default
        return self.bounded(path, str(value), default)

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
            self.error(path, f"must be a whole number, got {value!r}")
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
        self, data: Mapping[str, Any], known: set[str], ignored: Mapping[str, str], prefix: str = ""
    ) -> None:
        for key in data:
            path = f"{prefix}{key}"
            if key in ignored:
                self.note(path, ignored[key])
            elif key not in known and key != "$schema":
                self.note(path, "is not a field flowport knows; kept and ignored")


def _kind(value: Any) -> str:
    for kind, text in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list")):
        if isinstance(value, kind):  # YAML's line-numbered containers too
            return text
    return type(value).__name__


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _extras(raw: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: to_plain(raw[k]) for k in keys if k in raw}


# -- --set --------------------------------------------------------------------------------


def apply_set(raw: Mapping[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``az``'s ``--set path.to.field=value``: the value is read as a YAML scalar."""
    result = to_plain(dict(raw))
    for item in assignments:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise SpecError([Problem("InvalidSet", f"--set expects path=value, got {item!r}")])
        parts = path.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        try:
            node[parts[-1]] = parse_yaml(text, "--set") if text else ""
        except FlowError as exc:
            detail = exc.problems[0].message
            raise SpecError(
                [
                    Problem(
                        "InvalidSet",
                        f"--set {path.strip()}: the value is not valid YAML ({detail}); quote it",
                    )
                ]
            ) from None
    return result


def read_yaml(text: str, file: str) -> Any:
    """Parse a YAML document; a syntax error becomes a SpecError with file and line."""
    try:
        return parse_yaml(text, file)
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
}


def parse_model(raw: Any, file: str | None = None, base_dir: Path | None = None) -> ModelSpec:
    r = _Reader(raw, file, "model")
    name = r.string(raw, "name", "name") or ""
    if not name:
        r.error("name", "is required")
    elif not MODEL_NAME_RULE.match(name):
        r.error("name", f"{name!r} is not a valid model name: letters, digits, '_', '.', '-', up to 255")
    version = r.string(raw, "version", "version")
    if version is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", version):
        r.error("version", f"{version!r} is not a valid version: letters, digits, '_', '.', '-'")
    path_text = r.string(raw, "path", "path")
    if not path_text:
        r.error("path", "is required: the flow folder to register")
    kind = r.string(raw, "type", "type")
    if kind not in (None, "custom_model"):
        r.note("type", f"{kind!r} is treated as a prompt flow folder (custom_model)")
    r.unknown(raw, _MODEL_FIELDS, _MODEL_IGNORED)
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
    ref = text.strip()
    if ref.startswith("azureml:"):
        ref = ref[len("azureml:") :]
    if ref.startswith("//") or "/" in ref:
        raise SpecError(
            [Problem("InvalidField", f"model: {text!r} is not a model reference; use name:version")]
        )
    if "@" in ref:
        name, _, label = ref.partition("@")
        if label != "latest":
            raise SpecError(
                [Problem("InvalidField", f"model: label {label!r} is not supported; use @latest")]
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
    auth_mode = (r.string(raw, "auth_mode", "auth_mode", "key") or "key").lower()
    if auth_mode == "aad_token":
        r.error("auth_mode", "aad_token needs Microsoft Entra ID; flowport supports key and aml_token")
    elif auth_mode not in ("key", "aml_token"):
        r.error("auth_mode", f"must be key or aml_token, got {auth_mode!r}")
    traffic = r.percentages(raw, "traffic", "traffic") if "traffic" in raw else None
    mirror = r.percentages(raw, "mirror_traffic", "mirror_traffic") if "mirror_traffic" in raw else None
    if mirror:
        check_mirror_shape(mirror, r.error)
    r.unknown(raw, _ENDPOINT_FIELDS, dict.fromkeys(_ENDPOINT_AZURE_ONLY, _AZURE_ONLY_NOTE))
    description = r.string(raw, "description", "description", "") or ""
    tags = r.string_map(raw, "tags", "tags")
    compute = r.string(raw, "compute", "compute")
    if compute is not None:
        compute = compute_reference(compute)
        if not COMPUTE_NAME_RULE.match(compute):
            r.error("compute", f"{compute!r} is not a compute: use azureml:NAME (flowport compute list)")
    r.done()
    return EndpointSpec(
        name,
        auth_mode,
        description,
        tags,
        traffic,
        mirror,
        _extras(raw, _ENDPOINT_AZURE_ONLY),
        tuple(r.notes),
        compute,
    )


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
    extras: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


_DEPLOYMENT_FIELDS = {
    "name", "endpoint_name", "model", "description", "tags", "instance_type", "instance_count",
    "environment_variables", "request_settings", "liveness_probe", "readiness_probe", "data_collector",
    "secret_environment_variables",
}  # fmt: skip
_DEPLOYMENT_KEPT = {
    "environment": "runs as local processes from flowport's own environment; kept as a label",
    "code_configuration": "a flow deployment needs no scoring script; kept and ignored",
    "app_insights_enabled": "use the Prometheus /metrics and JSON logs instead; kept and ignored",
    "scale_settings": "instance_count is applied as given; kept and ignored",
    "egress_public_network_access": _AZURE_ONLY_NOTE,
    "type": "every deployment runs on the configured flowport runtime; kept and ignored",
    "properties": "kept",
    "resources": "kept; used by `export --format kubernetes` (requests and limits)",
    "default_instance_type": "kept and ignored",
}


def parse_deployment(raw: Any, file: str | None = None, base_dir: Path | None = None) -> DeploymentSpec:
    r = _Reader(raw, file, "deployment")
    name = r.name(raw, "name", "name")
    endpoint_name = r.name(raw, "endpoint_name", "endpoint_name", required=False) or None
    model_ref, model_path, model_properties = _model_field(r, raw, base_dir)
    settings = r.mapping(raw, "request_settings", "request_settings")
    if "max_queue_wait_ms" in settings:
        r.note("request_settings.max_queue_wait_ms", "deprecated by Azure; flowport queues for up to 500 ms")
    r.unknown(
        settings,
        {"request_timeout_ms", "max_concurrent_requests_per_instance", "max_queue_wait_ms"},
        {},
        "request_settings.",
    )
    collector = _data_collector(r, raw)
    variables = r.string_map(raw, "environment_variables", "environment_variables")
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
            settings, "request_timeout_ms", "request_settings.request_timeout_ms", 5000, 1, 300_000
        ),
        max_concurrent_requests_per_instance=r.integer(
            settings,
            "max_concurrent_requests_per_instance",
            "request_settings.max_concurrent_requests_per_instance",
            10,
            1,
            1000,
        ),
        liveness_probe=_probe(r, raw, "liveness_probe"),
        readiness_probe=_probe(r, raw, "readiness_probe"),
        data_collector=collector,
        extras=_extras(raw, tuple(_DEPLOYMENT_KEPT)),
    )
    if spec.instance_type:
        r.note("instance_type", f"{spec.instance_type!r} is kept as a label; instances run on this machine")
    r.unknown(raw, _DEPLOYMENT_FIELDS, _DEPLOYMENT_KEPT)
    r.done()
    return DeploymentSpec(**{**spec.__dict__, "notes": tuple(r.notes)})


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


def _model_field(
    r: _Reader, raw: Mapping[str, Any], base_dir: Path | None
) -> tuple[str | None, Path | None, dict[str, str]]:
    model = raw.get("model")
    if model is None:
        r.error("model", "is required: a registered model (azureml:name:version) or an inline path")
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
    path = Path(path_text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    r.unknown(model, {"path", "properties", "name", "version", "description", "type", "tags"}, {}, "model.")
    return None, path.resolve(), r.string_map(model, "properties", "model.properties")


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
    rolling = r.string(data, "rolling_rate", "data_collector.rolling_rate", "Hour") or "Hour"
    matched = next((rate for rate in ROLLING_RATES if rate.lower() == rolling.lower()), None)
    if matched is None:
        r.error("data_collector.rolling_rate", f"must be one of {', '.join(ROLLING_RATES)}, got {rolling!r}")
    r.unknown(data, {"collections", "rolling_rate", "sampling_rate"}, {}, "data_collector.")
    return DataCollection(
        request=enabled.get("request", False),
        response=enabled.get("response", False),
        sampling_rate=r.number(data, "sampling_rate", "data_collector.sampling_rate", 1.0, 0.0, 1.0),
        rolling_rate=matched or "Hour",
    )
