"""Database engines: SQLite (a file, WAL, one writer at a time) or PostgreSQL, migrated on open."""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
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
    engine = sa.create_engine(url, pool_size=10, max_overflow=20, hide_parameters=True)
    sa.event.listen(engine, "checkout", _refuse_if_closed)
    return engine


def _refuse_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Hand out only a live connection, without a round trip (`pool_pre_ping` costs one per
    checkout). An idle connection has nothing to read unless the server has closed it (a
    restart, `pg_terminate_backend`): then the pool drops it and checks out another."""
    if dbapi_connection.closed or select.select([dbapi_connection.fileno()], [], [], 0)[0]:
        raise sa.exc.DisconnectionError("the server closed this pooled connection")


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with migrating(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for Alembic, in one transaction, one migration run at a time.

    SQLite can not add a constraint to a table in place: a batch migration copies the table
    and drops the old one, which fails while other tables' rows refer to it and foreign keys
    are enforced. So on SQLite they are off while migrating (SQLite allows the switch only
    outside a transaction), and every reference is checked before the migration commits."""
    sqlite = engine.dialect.name == "sqlite"
    with _MIGRATING, engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if dangling:
                        raise RuntimeError(
                            f"a migration left rows that refer to nothing: {dangling[:5]}"
                        )
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def open_database(url: str) -> sa.Engine:
    engine = create_engine(url)
    migrate(engine)
    return engine


def insert_new(conn: sa.Connection, table: sa.Table, *returning: sa.Column[Any]) -> Any:
    """INSERT that skips a row a unique constraint already holds (`ON CONFLICT DO NOTHING`):
    with RETURNING, one round trip both claims a row and tells whether it was new. Built
    once per dialect and table: execute it with the row's values as parameters."""
    return _insert_new(conn.dialect.name, table, returning)


@lru_cache(maxsize=64)
def _insert_new(dialect_name: str, table: sa.Table, returning: tuple[sa.Column[Any], ...]) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_nothing()
    return statement.returning(*returning) if returning else statement


# PostgreSQL's answers to a transaction that lost a deadlock or could not be serialized: it
# was rolled back whole, and it is the database's advice to run it again.
_LOST_RACE = frozenset({"40P01", "40001"})


def lost_race(error: BaseException) -> bool:
    """True when the whole transaction was rolled back only because another one overlapped it
    (PostgreSQL's deadlock detector chose it): running it again is safe and will succeed."""
    orig = getattr(error, "orig", None)
    return isinstance(error, sa.exc.OperationalError) and (
        getattr(orig, "sqlstate", None) in _LOST_RACE
    )


def reading(engine: sa.Engine) -> sa.Connection:
    """A connection for reads only: on SQLite it takes no write lock."""
    return engine.connect().execution_options(**{READ_ONLY: True})


@contextmanager
def single_statement(engine: sa.Engine, *, write: bool = False) -> Iterator[sa.Connection]:
    """A connection for one statement that is atomic by itself: a read, or a write such as
    `INSERT ... ON CONFLICT`. PostgreSQL runs it in autocommit, with no BEGIN before it and
    no COMMIT or ROLLBACK after: two round trips fewer than a transaction of one statement.
    SQLite runs it as a read (no write lock) or a write (its own committed transaction)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
    elif write:
        with engine.begin() as conn:
            yield conn
    else:
        with reading(engine) as conn:
            yield conn
