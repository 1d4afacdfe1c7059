"""SQLAlchemy table definitions. Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


connections = Table(
    "connections",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("module", String(255), nullable=True),
    Column("configs", Text, nullable=False, default="{}"),
    Column("secrets", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow),
)
