"""Connection YAML in prompt flow's shape, ``${env:VAR}`` references and ``--set`` overrides."""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from flowport.connections.types import (
    Connection,
    ConnectionSpecError,
    CustomConnection,
    build_connection,
    connection_class,
)

_ENV_REF = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")
_IGNORED_KEYS = {"$schema", "name", "type", "module", "configs", "secrets"}
MAX_VALUE_CHARS = 64 * 1024
"""The longest value a connection field may hold."""


def resolve_env(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace a ``${env:VAR}`` string by the variable's value (error when it is unset)."""
    if not isinstance(value, str):
        return value
    match = _ENV_REF.match(value.strip())
    if not match:
        return value
    env = os.environ if environ is None else environ
    var = match.group(1)
    if var not in env:
        raise ConnectionSpecError(f"environment variable {var!r} is not set (referenced as {value!r})")
    return env[var]


def apply_set(spec: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` (or ``configs.key=value``) assignments to a connection spec."""
    spec = {**spec}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConnectionSpecError(f"--set expects key=value, got {item!r}")
        section, dot, field = key.partition(".")
        if dot and section in ("configs", "secrets"):
            spec[section] = {**(spec.get(section) or {}), field: value}
        else:
            spec[key] = value
    return spec


def connection_from_spec(spec: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Connection:
    """Build a connection from its YAML mapping; errors name the field at fault."""
    name = spec.get("name")
    if not name or not isinstance(name, str):
        raise ConnectionSpecError("a connection needs a 'name'")
    if "type" not in spec:
        raise ConnectionSpecError(f"connection {name!r} needs a 'type'")
    cls = connection_class(str(spec["type"]))
    module = spec.get("module")
    if cls is CustomConnection:
        configs = _values(name, spec, "configs", environ)
        secrets = _values(name, spec, "secrets", environ)
        return build_connection(name, cls.type, configs, secrets, module)
    values = _values(name, {"": {k: v for k, v in spec.items() if k not in _IGNORED_KEYS}}, "", environ)
    conn = cls(name=name, module=module, **values)
    missing = conn.missing_fields()
    if missing:
        raise ConnectionSpecError(f"{cls.type} connection {name!r} is missing {', '.join(missing)}")
    return conn


def _values(
    name: str, spec: Mapping[str, Any], section: str, environ: Mapping[str, str] | None
) -> dict[str, Any]:
    """One section's fields: a mapping of scalars, each at most ``MAX_VALUE_CHARS`` long."""
    raw = spec.get(section) or {}
    where = f"{section} of connection {name!r}" if section else f"connection {name!r}"
    if not isinstance(raw, Mapping):
        raise ConnectionSpecError(f"{where} must be a mapping of field: value")
    values = {}
    for field, value in raw.items():
        if isinstance(value, Mapping | list):
            kind = "a list" if isinstance(value, list) else "a mapping"
            raise ConnectionSpecError(f"{where}: {field} must be a string, not {kind}")
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            raise ConnectionSpecError(f"{where}: {field} is longer than {MAX_VALUE_CHARS:,} characters")
        values[str(field)] = resolve_env(as_text(value), environ)
    return values


def as_text(value: Any) -> Any:
    """A field's value as the text it was written as: connection fields are strings.

    YAML reads ``api_version: 2024-02-01`` as a date and ``retries: 3`` as a number; prompt
    flow refuses both ("Not a valid string"), flowport keeps ``"2024-02-01"`` and ``"3"``.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def env_override_name(connection: str, field: str) -> str:
    """``my conn`` + ``api_key`` -> ``MY_CONN_API_KEY``."""
    return f"{connection}_{field}".upper().replace(" ", "_").replace("-", "_")


def apply_env_overrides(
    name: str,
    connection: Connection | None,
    lookup: Mapping[str, Connection],
    environ: Mapping[str, str] | None = None,
) -> Connection | None:
    """Apply deployment-time overrides from the environment to one connection.

    ``<name>=<other connection>`` swaps in another stored connection, ``<name>={json}``
    replaces it with an inline definition, and ``<NAME>_<FIELD>=value`` overrides one field.
    """
    env = os.environ if environ is None else environ
    swap = env.get(name)
    if swap:
        swap = swap.strip()
        if swap.startswith("{"):
            try:
                spec = json.loads(swap)
            except ValueError as exc:
                raise ConnectionSpecError(f"environment variable {name!r} is not valid JSON: {exc}") from None
            spec.setdefault("name", name)
            if "type" not in spec and connection is not None:
                spec["type"] = connection.type
            connection = connection_from_spec(spec, env)
        elif swap in lookup:
            connection = lookup[swap]
        else:
            raise ConnectionSpecError(
                f"environment variable {name!r} names connection {swap!r}, which does not exist"
            )
    if connection is None:
        return None
    overrides = {}
    fields = (
        [*connection.configs, *connection.secrets]
        if isinstance(connection, CustomConnection)
        else list(connection.fields)
    )
    for field in fields:
        value = env.get(env_override_name(name, field))
        if value is not None:
            overrides[field] = value
    if not overrides:
        return connection
    if isinstance(connection, CustomConnection):
        configs = {k: overrides.get(k, v) for k, v in connection.configs.items()}
        secrets = {k: overrides.get(k, v) for k, v in connection.secrets.items()}
        return build_connection(connection.name or name, connection.type, configs, secrets, connection.module)
    merged = {**connection.configs, **connection.secrets, **overrides}
    return build_connection(connection.name or name, connection.type, {}, merged, connection.module)


def connection_template(data: Mapping[str, Any]) -> dict[str, Any]:
    """A connection's YAML (``Connection.to_dict``'s shape) with every secret field replaced by
    ``${env:<NAME>_<FIELD>}``: what a container image may carry (``flowport flow build``)."""
    name = str(data["name"])
    template = {k: v for k, v in data.items() if v is not None}
    if isinstance(data.get("secrets"), Mapping):  # a custom connection: configs and secrets
        secret_fields = list(data["secrets"])
        template["secrets"] = {f: f"${{env:{env_override_name(name, f)}}}" for f in secret_fields}
        return template
    for field in connection_class(str(data["type"])).secret_fields:
        template[field] = f"${{env:{env_override_name(name, field)}}}"
    return template
