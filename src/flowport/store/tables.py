"""SQLAlchemy table definitions. Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, MetaData, String, Table, Text

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


def _created() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow)


def _updated() -> Column:
    return Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)


def _versioned(name: str) -> Table:
    """A table of immutable versions: (name, version) -> JSON document, archived flag."""
    return Table(
        name,
        metadata,
        Column("name", String(255), primary_key=True),
        Column("version", String(64), primary_key=True),
        Column("document", Text, nullable=False),
        Column("archived", Boolean, nullable=False, default=False),
        _created(),
    )


models = _versioned("models")
"""A registered flow version; ``document`` is its JSON (snapshot path, hash, tags, properties)."""

endpoints = Table(
    "endpoints",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("document", Text, nullable=False),
    Column("secrets", Text, nullable=False, default=""),
    _created(),
    _updated(),
)
"""``document`` is the endpoint's JSON; ``secrets`` its keys, encrypted."""

deployments = Table(
    "deployments",
    metadata,
    Column("endpoint", String(64), ForeignKey("endpoints.name", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("document", Text, nullable=False),
    _created(),
    _updated(),
)

operations = Table(
    "operations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("endpoint", String(64), nullable=False),
    Column("document", Text, nullable=False),
    _created(),
    _updated(),
)

environments = _versioned("environments")
"""A registered environment version; ``document`` is its JSON (image, conda file, build snapshot)."""

computes = Table(
    "computes",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("document", Text, nullable=False),
    _created(),
    _updated(),
)
"""A registered compute target (``ray``, ``kubernetes``); ``document`` its JSON, no secret."""
