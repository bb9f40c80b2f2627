"""The request path's statements on PostgreSQL: straight on psycopg, prepared, sent together.

Each statement is still built with SQLAlchemy (one definition for both databases, and
SQLite runs it through SQLAlchemy as before). On PostgreSQL it is compiled once per set of
parameter names, then run on the transaction's own psycopg connection as a prepared
statement: none of SQLAlchemy's per-execution work (cache key, execution context, result
set-up). A write whose result nothing reads (`later`) is not sent at once: it waits, and
goes in pipeline mode in the same round trip as the next statement that answers, or as the
COMMIT. Anything else that runs on the connection (a statement through SQLAlchemy, its
commit or rollback) first sends or drops what waits, so the order of statements is always
the order they were given in; `install` hooks that up.

BEGIN waits too. psycopg, left to begin transactions itself, sends BEGIN alone and waits
for its answer, even in pipeline mode: a round trip of its own per transaction. So psycopg
runs in autocommit, and every SQLAlchemy transaction (explicit, or begun by a first
statement) starts with a waiting BEGIN; a connection asked for AUTOCOMMIT
(`single_statement`) gets none. A transaction that sent nothing commits or rolls back
without a word to the server.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from psycopg.pq import ExecStatus

TUPLES_OK = ExecStatus.TUPLES_OK
_WAITING = "punchcard.hot.waiting"  # Connection.info: the writes not sent yet, in order
_BEGIN = ("BEGIN", None)
_COMMIT = ("COMMIT", None)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A statement compiled for psycopg: its SQL, how to make each parameter, how to read rows."""

    sql: str
    binds: tuple[tuple[str, str | None, Any, Callable[[Any], Any] | None], ...]
    results: tuple[Callable[[Any], Any] | None, ...] | None  # None: take the values as they are

    def arguments(self, params: Mapping[str, Any]) -> dict[str, Any]:
        made = {}
        for name, key, fixed, process in self.binds:
            value = fixed if key is None else params[key]
            made[name] = value if process is None or value is None else process(value)
        return made


@lru_cache(maxsize=512)
def _plan(statement: Any, keys: tuple[str, ...], dialect: sa.Dialect) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("a hot statement takes no expanding (IN) or literal-execute parameters")
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError("a hot statement's columns have no Python-side defaults")
    binds = []
    for name, bind in compiled.binds.items():
        key = bind.key if bind.key in keys else None
        if key is None and bind.required:
            raise ValueError(f"a hot statement needs the parameter {bind.key!r}")
        fixed = None if key is not None else bind.effective_value
        impl = bind.type.dialect_impl(dialect)
        binds.append((name, key, fixed, impl.bind_processor(dialect)))
    results = None
    columns = _returned(statement)
    if columns is not None:
        processors = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
        results = processors if any(p is not None for p in processors) else None
    return _Plan(compiled.string, tuple(binds), results)


def _returned(statement: Any) -> Sequence[Any] | None:
    """The typed columns a statement returns (a SELECT's, or DML's RETURNING), if it says."""
    if isinstance(statement, sa.TextClause):
        return None
    columns = getattr(statement, "selected_columns", None)
    if columns is None:
        columns = getattr(statement, "exported_columns", None)
    return list(columns) if columns is not None else None


# Each statement's row maker, by its SQL: made from its first answer's column names (psycopg's
# `description` would build them again for every answer).
_ROWS: dict[str, Callable[[Any], Any]] = {}


def _remember_rows(sql: str, answer: Any) -> Callable[[Any], Any]:
    """Rows read the way SQLAlchemy's are read on the request path: by attribute, by
    position, and `_mapping`."""
    names = [answer.fname(i).decode() for i in range(answer.nfields)]
    base = namedtuple("Row", names, rename=True)  # type: ignore[misc]
    row = type("Row", (base,), {"__slots__": (), "_mapping": property(base._asdict)})
    make: Callable[[Any], Any] = row._make  # type: ignore[attr-defined]
    if len(_ROWS) < 512:
        _ROWS[sql] = make
    return make


def _on_postgresql(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def rows(conn: sa.Connection, statement: Any, params: Mapping[str, Any]) -> list[Any]:
    """The statement's rows; what waits goes in the same round trip, before it."""
    if not _on_postgresql(conn):
        return list(conn.execute(statement, params).all())
    plan = _plan(statement, tuple(params), conn.dialect)
    _begin(conn)
    raw = _psycopg(conn)
    arguments = plan.arguments(params)
    _announce(conn, plan.sql, arguments)
    waiting = conn.info.pop(_WAITING, None)
    try:
        cursor = raw.cursor()
        if waiting:  # BEGIN, at least, unless the connection is in AUTOCOMMIT
            with raw.pipeline():
                _send(raw, waiting)
                cursor.execute(plan.sql, arguments, prepare=True)
        else:
            cursor.execute(plan.sql, arguments, prepare=True)
        answer = cursor.pgresult
        if answer is None or answer.status != TUPLES_OK:
            return []
        values = cursor.fetchall()
    except psycopg.Error as error:
        raise _wrapped(conn, plan.sql, error) from error
    make = _ROWS.get(plan.sql) or _remember_rows(plan.sql, answer)
    processors = plan.results
    if processors is None:
        return [make(v) for v in values]
    return [
        make(
            value if p is None or value is None else p(value)
            for p, value in zip(processors, v, strict=True)
        )
        for v in values
    ]


def first(conn: sa.Connection, statement: Any, params: Mapping[str, Any]) -> Any | None:
    """The statement's first row, or None."""
    found = rows(conn, statement, params)
    return found[0] if found else None


def later(conn: sa.Connection, statement: Any, params: Mapping[str, Any]) -> None:
    """A write whose result nothing reads: sent with the next statement that answers, or
    with the COMMIT (on SQLite, at once)."""
    if not _on_postgresql(conn):
        conn.execute(statement, params)
        return
    plan = _plan(statement, tuple(params), conn.dialect)
    _begin(conn)
    arguments = plan.arguments(params)
    _announce(conn, plan.sql, arguments)
    conn.info.setdefault(_WAITING, []).append((plan.sql, arguments))


def commit(conn: sa.Connection, transaction: sa.RootTransaction) -> None:
    """Commit, with what waits in the same round trip."""
    waiting = conn.info.pop(_WAITING, None) if _on_postgresql(conn) else None
    if waiting and waiting != [_BEGIN]:  # a transaction that sent nothing has nothing to end
        _send_together(conn, [*waiting, _COMMIT])  # psycopg's commit() would sync again
    transaction.commit()  # after psycopg's COMMIT, SQLAlchemy's only ends its own bookkeeping


def _psycopg(conn: sa.Connection) -> psycopg.Connection[Any]:
    return cast("psycopg.Connection[Any]", conn.connection.driver_connection)


def _begin(conn: sa.Connection) -> None:
    """What SQLAlchemy's autobegin does (no round trip: its `begin` event makes BEGIN wait),
    so that the caller's `conn.commit()` commits these statements too."""
    if not conn.in_transaction():
        conn.begin()


def _send(raw: psycopg.Connection[Any], waiting: list[tuple[str, dict[str, Any] | None]]) -> None:
    cursor = raw.cursor()
    for sql, arguments in waiting:
        cursor.execute(sql, arguments, prepare=True)


def _before_statement(
    conn: sa.Connection, _cursor: Any, sql: str, parameters: Any, *_: Any
) -> tuple[str, Any]:
    _flush(conn)
    return sql, parameters  # registered with retval=True: SQLAlchemy does not wrap it


def _begin_later(conn: sa.Connection) -> None:
    if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        conn.info[_WAITING] = [_BEGIN]


def _flush_to_commit(conn: sa.Connection) -> None:
    """SQLAlchemy's commit: what waits goes first, unless it is only the BEGIN of a
    transaction that did nothing (psycopg then sends no COMMIT either)."""
    if not conn.invalidated and conn.info.get(_WAITING) == [_BEGIN]:
        del conn.info[_WAITING]
    _flush(conn)


def _flush(conn: sa.Connection) -> None:
    waiting = None if conn.invalidated else conn.info.pop(_WAITING, None)
    if waiting:
        _send_together(conn, waiting)


def _send_together(conn: sa.Connection, waiting: list[tuple[str, dict[str, Any] | None]]) -> None:
    """The statements in one round trip (pipeline mode), their results not read."""
    raw = _psycopg(conn)
    try:
        with raw.pipeline():
            _send(raw, waiting)
    except psycopg.Error as error:
        raise _wrapped(conn, waiting[-1][0], error) from error


def _drop(conn: sa.Connection) -> None:
    if not conn.invalidated:  # an invalidated connection's writes went with it
        conn.info.pop(_WAITING, None)


def install(engine: sa.Engine) -> None:
    """Each transaction begins with a waiting BEGIN; whatever else runs on a connection sends
    what waits first; a rollback drops it, and a connection goes back to the pool with
    nothing waiting. The engine's psycopg connections must be in autocommit."""
    sa.event.listen(engine, "begin", _begin_later)
    sa.event.listen(engine, "before_cursor_execute", _before_statement, retval=True)
    sa.event.listen(engine, "commit", _flush_to_commit)
    sa.event.listen(engine, "rollback", _drop)
    sa.event.listen(engine, "checkin", lambda _dbapi, record: record.info.pop(_WAITING, None))


def _announce(conn: sa.Connection, sql: str, arguments: dict[str, Any]) -> None:
    """Listeners of SQLAlchemy's `before_cursor_execute` (the tests' statement counters) see
    these statements too; this module's own (which would send what waits) is not called."""
    for listener in conn.dispatch.before_cursor_execute:
        if listener is not _before_statement:
            listener(conn, None, sql, arguments, None, False)


def _wrapped(conn: sa.Connection, sql: str, error: psycopg.Error) -> sa.exc.StatementError:
    """psycopg's error as SQLAlchemy would have raised it, so callers catch one kind; a
    connection the server closed is dropped from the pool."""
    raw = _psycopg(conn)
    broken = raw.broken or raw.closed
    if broken:
        conn.invalidate(error)
    return sa.exc.DBAPIError.instance(
        sql,
        None,
        error,
        psycopg.Error,
        hide_parameters=True,
        connection_invalidated=broken,
        dialect=conn.dialect,
    )
