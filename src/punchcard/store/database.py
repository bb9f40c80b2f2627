"""Database engines: SQLite (a file, WAL, one writer at a time) or PostgreSQL, migrated on open."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite

MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "punchcard_read_only"
_MIGRATING = threading.Lock()  # Alembic's operation proxies are module globals: one at a time


def create_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite gets WAL and BEGIN IMMEDIATE so writers queue, never overspend."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(connection: sa.Connection) -> None:
            # Writers take the write lock up front, so they queue instead of failing on upgrade;
            # readers (see `reading`) take none and never wait behind a writer (WAL).
            if connection.get_execution_options().get(READ_ONLY):
                connection.exec_driver_sql("BEGIN")
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # hide_parameters: a logged database error never carries an email, a phone or a hash.
    return sa.create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True
    )


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _MIGRATING, engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_database(url: str) -> sa.Engine:
    engine = create_engine(url)
    migrate(engine)
    return engine


def insert_new(conn: sa.Connection, table: sa.Table) -> Any:
    """INSERT that skips a row a unique constraint already holds (`ON CONFLICT DO NOTHING`):
    with RETURNING, one round trip both claims a row and tells whether it was new."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def reading(engine: sa.Engine) -> sa.Connection:
    """A connection for reads only: on SQLite it takes no write lock."""
    return engine.connect().execution_options(**{READ_ONLY: True})
