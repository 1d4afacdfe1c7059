"""Rows of the connections table: the storage behind ``connections.ConnectionService``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select, update

from flowport.store.database import Database
from flowport.store.tables import connections, utcnow

_COLUMNS = ("name", "type", "module", "configs", "secrets")


class ConnectionRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, name: str) -> Mapping[str, Any] | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(connections).where(connections.c.name == name)).mappings().first()
        return dict(row) if row else None

    def list(self) -> list[Mapping[str, Any]]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(connections).order_by(connections.c.name)).mappings().all()
        return [dict(r) for r in rows]

    def upsert(self, row: Mapping[str, Any]) -> None:
        values = {k: row.get(k) for k in _COLUMNS}
        with self.db.engine.begin() as conn:
            updated = conn.execute(
                update(connections)
                .where(connections.c.name == values["name"])
                .values(**values, updated_at=utcnow())
            )
            if updated.rowcount == 0:
                conn.execute(insert(connections).values(**values))

    def delete(self, name: str) -> bool:
        with self.db.engine.begin() as conn:
            return conn.execute(delete(connections).where(connections.c.name == name)).rowcount > 0
