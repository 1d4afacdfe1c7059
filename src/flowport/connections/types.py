"""Connection types in prompt flow's shape, as tools receive them.

A connection is a named set of fields, some of them secret. ``from promptflow.connections
import OpenAIConnection`` gives these same classes when prompt flow is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

SCRUBBED = "******"


class ConnectionSpecError(ValueError):
    """A connection definition is invalid."""


class Connection:
    """Base of all connection types: typed fields, some of them secret."""

    type: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    required: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str | None = None, module: str | None = None, **values: Any) -> None:
        unknown = set(values) - set(self.fields)
        if unknown:
            raise ConnectionSpecError(
                f"{self.type} connection does not take {', '.join(sorted(unknown))}; "
                f"its fields are {', '.join(self.fields)}"
            )
        self.name = name
        self.module = module
        for field in self.fields:
            setattr(self, field, values.get(field, self.defaults.get(field)))

    @property
    def configs(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.fields if f not in self.secret_fields}

    @property
    def secrets(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.fields if f in self.secret_fields}

    def missing_fields(self) -> list[str]:
        return [f for f in self.required if not getattr(self, f, None)]

    def to_dict(self, *, show_secrets: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type}
        data.update(self.configs)
        for key, value in self.secrets.items():
            data[key] = value if show_secrets or not value else SCRUBBED
        if self.module:
            data["module"] = self.module
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class OpenAIConnection(Connection):
    type = "open_ai"
    fields = ("api_key", "organization", "base_url")
    secret_fields = frozenset({"api_key"})
    required = ("api_key",)


class AzureOpenAIConnection(Connection):
    type = "azure_open_ai"
    fields = ("api_key", "api_base", "api_type", "api_version")
    secret_fields = frozenset({"api_key"})
    required = ("api_key", "api_base")
    defaults = {"api_type": "azure", "api_version": "2024-02-01"}


class ServerlessConnection(Connection):
    type = "serverless"
    fields = ("api_key", "api_base")
    secret_fields = frozenset({"api_key"})
    required = ("api_key", "api_base")


class CustomConnection(Connection):
    """Free-form configs and secrets, read as prompt flow's custom connection reads them.

    A mapping of every field (``dict(conn)``, ``{**conn}``, ``conn["key"]``, ``conn.keys()``,
    a secret winning over a config of the same name), with ``conn.configs``, ``conn.secrets``
    and attribute access (``conn.endpoint``). Unlike prompt flow's, where ``"key" in conn``
    and ``list(conn)`` raise ``KeyError``, membership and iteration work on the field names,
    and ``conn.get(key, default)`` exists.
    """

    type = "custom"

    def __init__(
        self,
        secrets: dict[str, Any] | None = None,
        configs: dict[str, Any] | None = None,
        name: str | None = None,
        module: str | None = None,
        **_: Any,
    ) -> None:
        self.name = name
        self.module = module
        object.__setattr__(self, "_configs", dict(configs or {}))
        object.__setattr__(self, "_secrets", dict(secrets or {}))

    @property
    def configs(self) -> dict[str, Any]:
        return self._configs

    @property
    def secrets(self) -> dict[str, Any]:
        return self._secrets

    def missing_fields(self) -> list[str]:
        return []

    def is_secret(self, key: str) -> bool:
        return key in self._secrets

    def keys(self) -> list[str]:
        """Config names, then secret names (what ``dict(conn)`` reads)."""
        return [*self._configs, *self._secrets]

    def __getattr__(self, key: str) -> Any:
        for source in ("_secrets", "_configs"):
            values = self.__dict__.get(source, {})
            if key in values:
                return values[key]
        raise AttributeError(f"custom connection {self.__dict__.get('name')!r} has no field {key!r}")

    def __getitem__(self, key: str) -> Any:
        if key in self._secrets:
            return self._secrets[key]
        if key in self._configs:
            return self._configs[key]
        raise KeyError(f"Key {key!r} not found in connection {self.name!r}.")

    def __contains__(self, key: object) -> bool:
        return key in self._secrets or key in self._configs

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(self.keys()))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - self.get is this method

    def to_dict(self, *, show_secrets: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type, "configs": dict(self._configs)}
        data["secrets"] = {k: v if show_secrets or not v else SCRUBBED for k, v in self._secrets.items()}
        if self.module:
            data["module"] = self.module
        return data


CONNECTION_TYPES: dict[str, type[Connection]] = {
    cls.type: cls for cls in (OpenAIConnection, AzureOpenAIConnection, ServerlessConnection, CustomConnection)
}
_TYPE_ALIASES = {
    "openai": "open_ai",
    "azureopenai": "azure_open_ai",
    "azure_openai": "azure_open_ai",
}


def connection_class(type_name: str) -> type[Connection]:
    key = str(type_name).strip().lower().replace("-", "_")
    key = _TYPE_ALIASES.get(key.replace("_", ""), _TYPE_ALIASES.get(key, key))
    try:
        return CONNECTION_TYPES[key]
    except KeyError:
        raise ConnectionSpecError(
            f"unknown connection type {type_name!r}; use one of {', '.join(CONNECTION_TYPES)}"
        ) from None


def build_connection(
    name: str, type_name: str, configs: dict[str, Any], secrets: dict[str, Any], module: str | None = None
) -> Connection:
    """Make a typed connection from stored configs and secrets."""
    cls = connection_class(type_name)
    if cls is CustomConnection:
        return CustomConnection(secrets=secrets, configs=configs, name=name, module=module)
    return cls(name=name, module=module, **{**configs, **secrets})
