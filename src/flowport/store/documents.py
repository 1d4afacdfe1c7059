"""JSON documents keyed by a few columns: the storage behind models, endpoints, deployments
and operations. The store only keeps them; what a document means is the control plane's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select, update

from flowport.store.database import Database


class Documents:
    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table

    def _where(self, key: dict[str, Any]) -> list[Any]:
        return [self.table.c[name] == value for name, value in key.items()]

    def _row(self, row: Any) -> dict[str, Any]:
        data = {k: _utc_text(v) if isinstance(v, datetime) else v for k, v in dict(row).items()}
        document = json.loads(data.pop("document"))
        return {**document, **data}

    def get(self, **key: Any) -> dict[str, Any] | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(self.table).where(*self._where(key))).mappings().first()
        return self._row(row) if row else None

    def list(self, **filters: Any) -> list[dict[str, Any]]:
        query = select(self.table).where(*self._where(filters)).order_by(*self.table.primary_key.columns)
        with self.db.engine.connect() as conn:
            return [self._row(r) for r in conn.execute(query).mappings().all()]

    def put(self, key: dict[str, Any], document: dict[str, Any], **columns: Any) -> None:
        """Insert or replace the document stored under ``key``."""
        text = json.dumps(document, ensure_ascii=False, default=str)
        with self.db.engine.begin() as conn:
            changed = conn.execute(
                update(self.table).where(*self._where(key)).values(document=text, **columns)
            ).rowcount
            if not changed:
                conn.execute(insert(self.table).values(**key, document=text, **columns))

    def delete(self, **key: Any) -> bool:
        with self.db.engine.begin() as conn:
            return conn.execute(delete(self.table).where(*self._where(key))).rowcount > 0


def _utc_text(value: datetime) -> str:
    """ISO time in UTC with a Z, whatever the database kept (SQLite drops the zone)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
