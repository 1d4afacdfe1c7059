"""Connections kept in a store with their secrets encrypted.

The store is any object with the small ``ConnectionRows`` interface (the ``store``
package provides one over SQLAlchemy); this module only maps and encrypts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from flowport.connections.crypto import Cipher
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

    def as_mapping(self) -> dict[str, Connection]:
        return {c.name: c for c in self.list() if c.name}
