"""Database engines: SQLite (a file, WAL, one writer at a time) or PostgreSQL; what an
operator typed made into a URL; migrations run one at a time, and a check that a database
is at the newest one for the commands that must not migrate it."""

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
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite

from punchcard.store import hot

MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "punchcard_read_only"
_MIGRATING = threading.Lock()  # Alembic's operation proxies are module globals: one at a time
# The key of the PostgreSQL advisory lock a migration holds: the bytes "punchcrd" as a number.
MIGRATION_LOCK = int.from_bytes(b"punchcrd")


class DatabaseProblem(Exception):
    """A database the command can not use as it is (no such file, unreachable, not migrated):
    the message says so in one line, for the operator, never with a password in it."""


def database_url(given: str) -> str:
    """The URL an operator meant: a URL as it is, a plain path as a SQLite file
    (`punchcard.sqlite3`, `./data/x.sqlite3`), and `postgresql://` or `postgres://`
    through psycopg 3, the PostgreSQL driver Punchcard ships with."""
    scheme, sep, rest = given.partition("://")
    if not sep:
        return f"sqlite:///{given}"
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return given


def connect(given: str, *, create: bool = False) -> sa.Engine:
    """An engine on the database `given` names, checked by connecting once. A SQLite file
    must exist unless `create` (then its folder must): a command that only reads or adds
    to a database never leaves an empty file behind a mistyped path."""
    try:
        url = sa.make_url(database_url(given))
    except sa.exc.ArgumentError as exc:
        raise DatabaseProblem(f"{given!r} is not a database URL or a SQLite file path") from exc
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise DatabaseProblem(f"{shown}: an in-memory SQLite database can not be shared")
        path = Path(url.database)
        if create and not path.parent.is_dir():
            raise DatabaseProblem(f"no folder {path.parent} for the SQLite file {path}")
        if not create and not path.exists():
            raise DatabaseProblem(
                f"no database at {path} (`punchcard db upgrade --database {given}` makes one)"
            )
    elif url.drivername != "postgresql+psycopg":
        raise DatabaseProblem(
            f"{shown}: Punchcard runs on SQLite (sqlite:///FILE) or PostgreSQL "
            "(postgresql+psycopg://user@host/db)"
        )
    engine = create_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        raise DatabaseProblem(f"can not open {shown}: {reason}") from exc
    return engine


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
    # AUTOCOMMIT at psycopg's level only: a transaction's BEGIN is sent by `hot` (with its
    # first statement, where psycopg would send it on its own round trip).
    engine = sa.create_engine(
        url, pool_size=10, max_overflow=20, hide_parameters=True, isolation_level="AUTOCOMMIT"
    )
    sa.event.listen(engine, "checkout", _refuse_if_closed)
    hot.install(engine)
    return engine


def _refuse_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Hand out only a live connection, without a round trip (`pool_pre_ping` costs one per
    checkout). An idle connection has nothing to read unless the server has closed it (a
    restart, `pg_terminate_backend`): then the pool drops it and checks out another."""
    if dbapi_connection.closed or select.select([dbapi_connection.fileno()], [], [], 0)[0]:
        raise sa.exc.DisconnectionError("the server closed this pooled connection")


def migrate(engine: sa.Engine) -> str | None:
    """Bring the schema to the newest migration (idempotent); the revision it was at before
    (None: no schema), read under the migration lock, so of two processes starting together
    exactly one sees the database unmigrated."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with migrating(engine) as connection:
        before = _revision(connection)
        if before is not None and before not in _revisions():
            raise DatabaseProblem(_unknown(engine, before))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return before


def head() -> str:
    """The newest migration this version of Punchcard has."""
    return str(_script().get_current_head())


def require_head(engine: sa.Engine) -> None:
    """Refuse a database not at the newest migration: only `punchcard db upgrade` and
    `serve` migrate, so a worker, an audit or a write never runs against another schema."""
    with reading(engine) as conn:
        current = _revision(conn)
    shown = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise DatabaseProblem(f"{shown} holds no Punchcard schema: run `punchcard db upgrade`")
    if current not in _revisions():
        raise DatabaseProblem(_unknown(engine, current))
    if current != head():
        raise DatabaseProblem(
            f"{shown} is at migration {current}, not {head()}: run `punchcard db upgrade`"
        )


def _revision(conn: sa.Connection) -> str | None:
    """The migration the database is at (None: no schema), read as plain SQL: Alembic's
    own reader logs at info, into a worker's log."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _unknown(engine: sa.Engine, revision: str) -> str:
    shown = engine.url.render_as_string(hide_password=True)
    return (
        f"{shown} is at migration {revision}, which this Punchcard ({head()}) does not have: "
        "run a newer Punchcard"
    )


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def _revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _script().walk_revisions())


@contextmanager
def migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for Alembic, in one transaction, one migration run at a time.

    SQLite can not add a constraint to a table in place: a batch migration copies the table
    and drops the old one, which fails while other tables' rows refer to it and foreign keys
    are enforced. So on SQLite they are off while migrating (SQLite allows the switch only
    outside a transaction), and every reference is checked before the migration commits.

    Processes migrate one at a time too: on PostgreSQL the transaction first takes an
    advisory lock (released as it ends), on SQLite its BEGIN IMMEDIATE the write lock. The
    second process waits, then finds the schema already at the newest migration."""
    sqlite = engine.dialect.name == "sqlite"
    with _MIGRATING, engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                if not sqlite:
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
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
    """An engine on `url`, migrated: for a database the caller owns (tests, a temporary file)."""
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
