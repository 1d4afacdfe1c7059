"""``${{azureml://connections/NAME}}`` references in a deployment's environment variables.

Azure injects a workspace connection into a deployment's variable when its value has one of
these forms; flowport resolves them from its own connection store when the deployment starts:

- ``${{azureml://connections/NAME}}``: the connection itself. Set on a variable named after
  a connection the flow uses, the flow gets connection ``NAME`` under that name (the prompt
  flow deployment guide's "override by referring to asset"). The variable holds ``NAME``.
- ``.../NAME/target``: the connection's endpoint (``api_base``, ``endpoint`` or ``target``).
- ``.../NAME/credentials/FIELD``: one secret (``key`` is the connection's ``api_key``).
- ``.../NAME/metadata/FIELD``: one configuration value (``ApiVersion`` is ``api_version``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flowport.connections.service import ConnectionNotFound, ConnectionSource
from flowport.connections.types import Connection, ConnectionSpecError, CustomConnection

_REFERENCE = re.compile(
    r"^\$\{\{azureml://connections/(?P<name>[^/{}\s]+)"
    r"(?:/(?P<part>target|credentials/[^/{}\s]+|metadata/[^/{}\s]+))?\}\}$"
)
_TARGETS = ("api_base", "endpoint", "target", "azure_endpoint", "base_url")


@dataclass(frozen=True)
class ConnectionReference:
    name: str
    part: str | None = None
    """None (the whole connection), ``target``, ``credentials/FIELD`` or ``metadata/FIELD``."""


def parse_connection_reference(value: str) -> ConnectionReference | None:
    match = _REFERENCE.match(value.strip())
    return ConnectionReference(match["name"], match["part"]) if match else None


def resolve_connection_references(
    variables: Mapping[str, str], source: ConnectionSource
) -> tuple[dict[str, str], set[str]]:
    """The variables with every reference replaced, and the names of the connections referenced.

    A reference to a connection (or a field) that does not exist is a ConnectionSpecError naming
    the variable: the deployment fails with that line.
    """
    resolved, names = dict(variables), set()
    for key, value in variables.items():
        reference = parse_connection_reference(value) if "azureml://" in value else None
        if reference is None:
            continue
        try:
            connection = source.get(reference.name)
        except ConnectionNotFound:
            raise ConnectionSpecError(
                f"environment_variables.{key}: connection {reference.name!r} does not exist; create it "
                "(flowport connection create --file ...) or name another one"
            ) from None
        names.add(reference.name)
        resolved[key] = reference.name if reference.part is None else _field(key, connection, reference)
    return resolved, names


def _field(key: str, connection: Connection, reference: ConnectionReference) -> str:
    configs, secrets = dict(connection.configs), dict(connection.secrets)
    section, _, field = (reference.part or "").partition("/")
    if section == "target":
        candidates, pool = list(_TARGETS), configs
    elif section == "credentials":
        candidates, pool = [field, _snake(field), *(["api_key"] if field.lower() == "key" else [])], secrets
    else:
        candidates, pool = [field, _snake(field)], configs
    by_lower = {str(k).lower(): k for k in pool}
    for candidate in candidates:
        if candidate.lower() in by_lower:
            value = pool[by_lower[candidate.lower()]]
            return "" if value is None else str(value)
    what = (
        "secrets"
        if section == "credentials"
        else "configs"
        if isinstance(connection, CustomConnection)
        else "fields"
    )
    known = ", ".join(sorted(str(k) for k in pool)) or "none"
    raise ConnectionSpecError(
        f"environment_variables.{key}: connection {reference.name!r} has no {reference.part!r} "
        f"(its {what}: {known})"
    )


def _snake(name: str) -> str:
    """``ApiVersion`` -> ``api_version``: Azure's metadata names for prompt flow's fields."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
