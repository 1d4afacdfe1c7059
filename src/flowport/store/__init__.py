"""The store: SQLAlchemy tables, Alembic migrations, SQLite by default or PostgreSQL by URL."""

from flowport.store.connection_rows import ConnectionRows
from flowport.store.database import DATABASE_URL_ENV, Database, open_database
from flowport.store.documents import Documents

__all__ = ["DATABASE_URL_ENV", "ConnectionRows", "Database", "Documents", "open_database"]
