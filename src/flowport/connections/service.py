"""Connections kept in a store with their secrets encrypted.

The store is any object with the small ``ConnectionRows`` interface (the ``store``
package provides one over SQLAlchemy); this module only maps and encrypts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from flowport.connections.crypto import Cipher
from flowport.connections.spec import apply_env_overrides
from flowport.connections.types import Connection, ConnectionSpecError, build_connection


class ConnectionRows(Protocol):
    def get(self, name: str) -> Mapping[str, Any] | None: ...
    def list(self) -> list[Mapping[str, Any]]: ...
    def upsert(self, row: Mapping[str, Any]) -> None: ...
    def delete(self, name: str) -> bool: ...


class ConnectionNotFound(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"connection {self.name!r} does not exist"


class ConnectionService:
    """Create, read and delete connections; secrets never stored in clear."""

    def __init__(self, rows: ConnectionRows, cipher: Cipher) -> None:
        self.rows = rows
        self.cipher = cipher

    def save(self, connection: Connection) -> Connection:
        if not connection.name:
            raise ConnectionSpecError("a connection needs a name")
        self.rows.upsert(
            {
                "name": connection.name,
                "type": connection.type,
                "module": connection.module,
                "configs": json.dumps(connection.configs),
                "secrets": self.cipher.encrypt(json.dumps(connection.secrets)),
            }
        )
        return connection

    def _from_row(self, row: Mapping[str, Any]) -> Connection:
        return build_connection(
            row["name"],
            row["type"],
            json.loads(row["configs"] or "{}"),
            json.loads(self.cipher.decrypt(row["secrets"])) if row["secrets"] else {},
            row.get("module"),
        )

    def get(self, name: str) -> Connection:
        row = self.rows.get(name)
        if row is None:
            raise ConnectionNotFound(name)
        return self._from_row(row)

    def list(self) -> list[Connection]:
        return [self._from_row(row) for row in self.rows.list()]

    def delete(self, name: str) -> None:
        if not self.rows.delete(name):
            raise ConnectionNotFound(name)

    def handover(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored connections among ``names``, in the clear form a serving process is handed.

        Only those are decrypted; ``names`` may hold any strings (see ``FlowDef.connection_candidates``).
        """
        stored = {row["name"] for row in self.rows.list()}
        return {name: connection_row(self.get(name)) for name in sorted(set(names) & stored)}


class ConnectionSource(Protocol):
    """What a resolver reads connections from: the store's service, or a fixed set."""

    def get(self, name: str) -> Connection: ...
    def list(self) -> list[Connection]: ...


class StaticConnections:
    """Connections handed over whole (a deployment instance gets its own from the runtime)."""

    def __init__(self, connections: Mapping[str, Connection]) -> None:
        self.connections = dict(connections)

    @classmethod
    def from_rows(cls, rows: Mapping[str, Mapping[str, Any]]) -> StaticConnections:
        """From ``{name: {"type", "module", "configs", "secrets"}}`` with secrets in clear."""
        return cls(
            {
                name: build_connection(
                    name,
                    row["type"],
                    dict(row.get("configs") or {}),
                    dict(row.get("secrets") or {}),
                    row.get("module"),
                )
                for name, row in rows.items()
            }
        )

    def get(self, name: str) -> Connection:
        try:
            return self.connections[name]
        except KeyError:
            raise ConnectionNotFound(name) from None

    def list(self) -> list[Connection]:
        return list(self.connections.values())


def connection_row(connection: Connection) -> dict[str, Any]:
    """The clear-text form ``StaticConnections.from_rows`` reads."""
    return {
        "type": connection.type,
        "module": connection.module,
        "configs": connection.configs,
        "secrets": connection.secrets,
    }


class ConnectionResolver(Mapping[str, Connection]):
    """Connections by name, read from the store on first use, with environment overrides.

    Only the connections a flow actually uses are read and decrypted, and the store itself
    is opened (given as a factory) only when a flow uses a connection at all.
    """

    def __init__(
        self,
        service: ConnectionSource | Callable[[], ConnectionSource] | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._service = service
        self.environ = environ
        self._cache: dict[str, Connection] = {}

    @property
    def service(self) -> ConnectionSource | None:
        if callable(self._service):
            self._service = self._service()
        return self._service

    def _stored(self, name: str) -> Connection | None:
        if self.service is None:
            return None
        try:
            return self.service.get(name)
        except ConnectionNotFound:
            return None

    def __getitem__(self, name: str) -> Connection:
        if name not in self._cache:
            lookup = _LazyLookup(self)
            conn = apply_env_overrides(name, self._stored(name), lookup, self.environ)
            if conn is None:
                raise KeyError(name)
            self._cache[name] = conn
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        names = [c.name for c in self.service.list()] if self.service else []
        return iter(n for n in names if n)

    def __len__(self) -> int:
        return len(list(iter(self)))


class _LazyLookup(Mapping[str, Connection]):
    """Stored connections by name, for ``<conn>=<other name>`` overrides."""

    def __init__(self, resolver: ConnectionResolver) -> None:
        self.resolver = resolver

    def __getitem__(self, name: str) -> Connection:
        conn = self.resolver._stored(name)
        if conn is None:
            raise KeyError(name)
        return conn

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolver._stored(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.resolver)

    def __len__(self) -> int:
        return len(self.resolver)
