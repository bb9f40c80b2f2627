"""Process caches of what every request reads and almost never changes: the principal behind
an API key, and the program versions live in an environment. A hit is a dict read, so the
guard authenticates a cached key in the event loop and an order reads no version.

Only live environments are cached. A sandbox's clock moves and its versions change all
through a scenario run, and it must behave exactly as production does, so its keys and
versions are read every time. Versions by id are immutable and cached for any environment
(a bounded LRU).

Dropped on change: every code path that changes an API key, an environment or a program
version calls `changed(conn, env_id)` in its transaction. It drops this process's entries of
that environment at once and again when the connection goes back to the pool (after the
commit or rollback: a read that raced the change is dropped, never kept), and a transaction
that called it reads and keeps nothing here (it sees its own uncommitted writes). On
PostgreSQL it also runs `pg_notify('punchcard_cache', env_id)`, delivered on commit, and
each process that caches runs a listener (a daemon thread, its own autocommit psycopg
connection, `LISTEN punchcard_cache`) that drops the named environment's entries. While
the listener is not connected (starting, a lost connection, a PostgreSQL restart) caching
is off and everything is dropped, so a missed notification never leaves a stale entry.
On SQLite (one API process, but the CLI may write from another) entries also expire after
`SQLITE_TTL_S`. A read that began before a drop is never kept after it (`generation`).

Caching is on only in processes that `start` it (API processes and workers); a CLI or a
test that does not reads the database every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy as sa

if TYPE_CHECKING:
    from punchcard.services.context import Version
    from punchcard.services.tenants import Principal

CHANNEL = "punchcard_cache"
SQLITE_TTL_S = 2.0  # how long another process's change may go unseen on SQLite
MAX_KEYS = 10_000  # principals kept per process (the oldest is dropped first)
MAX_SPANS = 8  # live spans kept per environment (orders at nearby times need one or two)
MAX_VERSIONS = 1024  # versions by id (least recently used dropped first)
RETRY_S = 0.5  # between the listener's attempts to connect
POLL_S = 0.2  # how often the listener looks whether it is told to stop
# TCP keepalives: a connection lost without the server closing it (a network partition) is
# noticed within about IDLE + INTERVAL * COUNT seconds, and caching turns off.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
}
_PENDING = "punchcard_cache_changed"  # in a pooled connection's info: environments it changed
_NOTIFY = sa.select(sa.func.pg_notify(CHANNEL, sa.bindparam("b_env")))
# Keys are looked up by a keyed hash, so the process holds no key and no hash the database has.
_SALT = secrets.token_bytes(32)

log = logging.getLogger(__name__)

Span = tuple[datetime, "datetime | None", "Version", float]  # live_from, until, version, expires


class Caches:
    """One engine's caches in this process. Reads take no lock; writes and drops take one."""

    def __init__(self, engine: sa.Engine) -> None:
        self.postgres = engine.dialect.name == "postgresql"
        self.ttl = None if self.postgres else SQLITE_TTL_S
        self.conninfo = (
            engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            if self.postgres
            else ""
        )
        self.on = False
        self.generation = 0  # bumped by every drop: a read that began before it is not kept
        self.users = 0
        self._lock = threading.Lock()
        self._principals: dict[bytes, tuple[Principal, float]] = {}
        self._keys_of: dict[str, set[bytes]] = {}
        self._spans: dict[str, tuple[Span, ...]] = {}
        self._versions: OrderedDict[int, Version] = OrderedDict()
        self._listener: _Listener | None = None

    # Reads ---------------------------------------------------------------------------------

    def principal(self, key: str) -> Principal | None:
        found = self._principals.get(_digest(key)) if self.on else None
        if found is None or (self.ttl is not None and found[1] <= time.monotonic()):
            return None
        return found[0]

    def version_at(self, env_id: str, at: datetime) -> Version | None:
        spans = self._spans.get(env_id) if self.on else None
        if not spans:
            return None
        now = time.monotonic() if self.ttl is not None else 0.0
        for live_from, until, version, expires in spans:
            if live_from <= at and (until is None or at < until) and expires > now:
                return version
        return None

    def version(self, version_id: int) -> Version | None:
        found = self._versions.get(version_id) if self.on else None
        if found is not None:
            with contextlib.suppress(KeyError):  # dropped meanwhile by another thread
                self._versions.move_to_end(version_id)
        return found

    # Writes: each only if nothing was dropped since the read began -------------------------

    def keep_principal(self, key: str, principal: Principal, generation: int) -> None:
        if principal.env_kind != "live":
            return
        digest = _digest(key)
        with self._lock:
            if not self.on or generation != self.generation:
                return
            if digest not in self._principals and len(self._principals) >= MAX_KEYS:
                oldest = next(iter(self._principals))
                self._keys_of.get(self._principals.pop(oldest)[0].env_id, set()).discard(oldest)
            self._principals[digest] = (principal, self._expires())
            self._keys_of.setdefault(principal.env_id, set()).add(digest)

    def keep_span(
        self,
        env_id: str,
        live_from: datetime,
        until: datetime | None,
        version: Version,
        generation: int,
    ) -> None:
        with self._lock:
            if not self.on or generation != self.generation:
                return
            kept = self._spans.get(env_id, ())
            self._spans[env_id] = ((live_from, until, version, self._expires()), *kept)[:MAX_SPANS]

    def keep_version(self, version: Version) -> None:
        with self._lock:
            if not self.on:
                return
            self._versions[version.id] = version
            while len(self._versions) > MAX_VERSIONS:
                self._versions.popitem(last=False)

    def _expires(self) -> float:
        return math.inf if self.ttl is None else time.monotonic() + self.ttl

    # Drops ---------------------------------------------------------------------------------

    def drop(self, env_id: str) -> None:
        """Forget what is cached of one environment (versions by id never change)."""
        with self._lock:
            self.generation += 1
            self._spans.pop(env_id, None)
            for digest in self._keys_of.pop(env_id, ()):
                self._principals.pop(digest, None)

    def turn(self, on: bool) -> None:
        """Caching on or off; either way everything is dropped."""
        with self._lock:
            self.generation += 1
            self.on = on
            self._principals.clear()
            self._keys_of.clear()
            self._spans.clear()
            self._versions.clear()

    def _checked_in(self, _dbapi_connection: Any, record: Any) -> None:
        """A connection back in the pool: its transaction has ended, so what it changed is
        dropped again (a read that raced the change, from before its commit, is gone)."""
        changed = record.info.pop(_PENDING, None) if record is not None else None
        for env_id in changed or ():
            self.drop(env_id)


_caches: weakref.WeakKeyDictionary[sa.Engine, Caches] = weakref.WeakKeyDictionary()
_registering = threading.Lock()


def of(engine: sa.Engine) -> Caches | None:
    """The engine's caches in this process, if they were ever started."""
    return _caches.get(engine)


def reading(conn: sa.Connection) -> Caches | None:
    """The caches a transaction may read and keep, or None: they are off, or the transaction
    changed a cached environment itself (it sees its own writes, uncommitted)."""
    found = _caches.get(conn.engine)
    if found is None or not found.on or _PENDING in conn.info:
        return None
    return found


def changed(conn: sa.Connection, env_id: str) -> None:
    """An API key, an environment or a program version of `env_id` changes in this
    transaction: drop it here, in every process on PostgreSQL once the change commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"b_env": env_id})
    found = _caches.get(conn.engine)
    if found is not None:
        conn.info.setdefault(_PENDING, set()).add(env_id)
        found.drop(env_id)


def start(engine: sa.Engine) -> None:
    """Cache in this process from now on: on SQLite at once, on PostgreSQL once the listener
    is connected. Each `start` is matched by a `stop`; the first starts the listener."""
    with _registering:
        found = _caches.get(engine)
        if found is None:
            found = _caches[engine] = Caches(engine)
            sa.event.listen(engine, "checkin", found._checked_in)
        found.users += 1
        if found.users > 1:
            return
        if found.postgres:
            found._listener = _Listener(found)
            found._listener.start()
        else:
            found.turn(True)


def stop(engine: sa.Engine) -> None:
    """The last `stop` turns caching off and stops the listener, waiting at most a moment."""
    with _registering:
        found = _caches.get(engine)
        if found is None or found.users == 0:
            return
        found.users -= 1
        if found.users > 0:
            return
        listener, found._listener = found._listener, None
    if listener is not None:
        listener.stop()
    found.turn(False)


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), key=_SALT, digest_size=32).digest()


class _Listener(threading.Thread):
    """LISTEN on its own connection; caching is on only while it is connected."""

    def __init__(self, caches: Caches) -> None:
        super().__init__(name="punchcard-cache-listener", daemon=True)
        self.caches = caches
        self.stopping = threading.Event()

    def run(self) -> None:
        lost = False
        while not self.stopping.is_set():
            try:
                with psycopg.connect(
                    self.caches.conninfo, autocommit=True, connect_timeout=5, **KEEPALIVES
                ) as pg:
                    pg.execute(f"LISTEN {CHANNEL}")
                    self.caches.turn(True)
                    if lost:
                        log.info("the cache listener is connected again: caching is on")
                    while not self.stopping.is_set():
                        for notice in pg.notifies(timeout=POLL_S):
                            self.caches.drop(notice.payload)
            except psycopg.Error as error:
                if not lost:
                    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                    log.warning(
                        "the cache listener lost PostgreSQL (%s): caching is off until it "
                        "reconnects",
                        reason,
                    )
                lost = True
            finally:
                self.caches.turn(False)
            self.stopping.wait(RETRY_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=POLL_S + 1.0)
