"""The process caches of a live key's principal and the program versions live in a live
environment (services/caches.py): a cached request reads neither, and a change is seen at once
by the process that made it, by another process on notice (PostgreSQL) or within the TTL
(SQLite), and never after the listener lost its connection. Over real HTTP to a server
running in this process, so its engine's statements can be counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from punchcard.api.app import create_app
from punchcard.server import listening
from punchcard.services import caches, tenants
from punchcard.services.clock import SystemClock
from punchcard.store.database import create_engine, open_database, single_statement

from ..conftest import POSTGRES_URL

PROGRAM = (
    Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
).read_text()
# Version 2 of the same program (twice the points): an order names the version it ran under.
RICHER = PROGRAM.replace("points_per_unit: 10", "points_per_unit: 20")


@pytest.fixture
def live(database_url: str) -> Iterator[tuple[sa.Engine, dict[str, Any]]]:
    engine = open_database(database_url)
    yield engine, tenants.create_tenant(engine, "Cached Burritos", SystemClock().now())
    engine.dispose()


def _until(condition: Any, within_s: float) -> None:
    """Poll `condition` until it holds or `within_s` passes (the caller asserts the state)."""
    deadline = time.monotonic() + within_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def _caching(engine: sa.Engine) -> caches.Caches:
    found = caches.of(engine)
    assert found is not None
    _until(lambda: found.on, 10)  # PostgreSQL: once the listener is connected
    assert found.on
    return found


@contextmanager
def serving(engine: sa.Engine, key: str) -> Iterator[httpx.Client]:
    """A real server on a free port, in this process (uvicorn on a thread), and a client."""
    sock = listening("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(engine, SystemClock()), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _until(lambda: server.started, 10)
    assert server.started
    _caching(engine)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _post(http: httpx.Client, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    answer = http.post(path, json=body, headers={"Idempotency-Key": key})
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def _order(http: httpx.Client, order_id: str) -> dict[str, Any]:
    line = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "10.00"}
    return _post(http, "/v1/orders", {"id": order_id, "member": "ann", "lines": [line]}, order_id)


@contextmanager
def tables_read(engine: sa.Engine) -> Iterator[set[str]]:
    """Which of api_keys and program_versions the engine's statements name meanwhile. The
    member's locked read is left out: it also asks, in the same round trip, whether a version
    waits for the worker to apply it (`VERSION_DUE`), which no cache could answer."""
    named: set[str] = set()

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "AS version_due" in statement:
            statement = statement[: statement.index("EXISTS")]
        named.update(t for t in ("api_keys", "program_versions") if t in statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield named
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def _key_id(key: str) -> str:
    return "_".join(key.split("_", 3)[:3])


def test_a_cached_request_reads_no_key_and_no_version(
    live: tuple[sa.Engine, dict[str, Any]],
) -> None:
    engine, made = live
    with serving(engine, made["live_key"]) as http:
        _post(http, "/v1/programs/versions", {"source": PROGRAM}, "p1")
        with tables_read(engine) as first:
            _post(http, "/v1/members", {"id": "ann"}, "m1")  # the first since the publish
        assert first == {"api_keys", "program_versions"}
        _order(http, "o1")
        for order_id in ("o2", "o3"):
            with tables_read(engine) as named:
                placed = _order(http, order_id)
            assert (placed["program_version"], named) == (1, set())


def test_a_cached_request_makes_one_thread_hop(
    live: tuple[sa.Engine, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard authenticates from the cache in the event loop, and the dependency that
    hands the route its caller is async: the route's own body is the only work sent to the
    thread pool (a sync dependency would be a second hop, as it once was)."""
    engine, made = live
    with serving(engine, made["live_key"]) as http:
        _post(http, "/v1/programs/versions", {"source": PROGRAM}, "p1")
        _post(http, "/v1/members", {"id": "ann"}, "m1")
        _order(http, "o1")
        sent: list[str] = []
        real = anyio.to_thread.run_sync

        async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(getattr(func, "__qualname__", repr(func)))
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
        _order(http, "o2")
        assert len(sent) == 1, sent


def test_a_sandbox_is_read_every_time(live: tuple[sa.Engine, dict[str, Any]]) -> None:
    engine, made = live
    with serving(engine, made["sandbox_key"]) as http:
        _post(http, "/v1/programs/versions", {"source": PROGRAM}, "p1")
        _post(http, "/v1/members", {"id": "ann"}, "m1")
        _order(http, "o1")
        with tables_read(engine) as named:
            _order(http, "o2")
        assert named == {"api_keys", "program_versions"}


def test_a_revoked_key_is_refused_at_once_by_the_process_that_revoked_it(
    live: tuple[sa.Engine, dict[str, Any]],
) -> None:
    engine, made = live
    with serving(engine, made["live_key"]) as http:
        assert [http.get("/v1/clock").status_code for _ in range(3)] == [200, 200, 200]
        with engine.begin() as conn:
            tenants.revoke_key(conn, _key_id(made["live_key"]), SystemClock().now())
        refused = http.get("/v1/clock")
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthenticated")


def test_a_version_activated_is_used_by_the_next_order_at_once(
    live: tuple[sa.Engine, dict[str, Any]],
) -> None:
    engine, made = live
    with serving(engine, made["live_key"]) as http:
        _post(http, "/v1/programs/versions", {"source": PROGRAM}, "p1")
        _post(http, "/v1/members", {"id": "ann"}, "m1")
        first = [_order(http, "o1"), _order(http, "o2")]
        _post(http, "/v1/programs/versions", {"source": RICHER}, "p2")
        second = _order(http, "o3")
    assert [o["program_version"] for o in [*first, second]] == [1, 1, 2]


def test_a_key_revoked_by_another_process_is_refused_within_a_second_or_the_ttl(
    live: tuple[sa.Engine, dict[str, Any]], database_url: str
) -> None:
    """Another engine stands for another process: it shares nothing with this one's caches.
    On PostgreSQL its change is dropped here on notice; on SQLite it expires with the TTL."""
    engine, made = live
    key = made["live_key"]
    caches.start(engine)
    elsewhere = create_engine(database_url)
    try:
        cache = _caching(engine)
        with single_statement(engine) as conn:
            assert tenants.authenticate(conn, key) is not None
        assert cache.principal(key) is not None
        with elsewhere.begin() as conn:
            tenants.revoke_key(conn, _key_id(key), SystemClock().now())
        window = 1.0 if engine.dialect.name == "postgresql" else caches.SQLITE_TTL_S + 1
        _until(lambda: cache.principal(key) is None, window)
        with single_statement(engine) as conn:
            assert tenants.authenticate(conn, key) is None
    finally:
        elsewhere.dispose()
        caches.stop(engine)
    assert not cache.on


@pytest.mark.postgres
def test_caching_is_off_while_the_listener_is_not_connected(postgres_url: str) -> None:
    """pg_terminate_backend ends the listener's connection while no new one may be made:
    the entries are dropped and nothing is kept until it reconnects."""
    assert POSTGRES_URL is not None
    engine = open_database(postgres_url)
    made = tenants.create_tenant(engine, "Cached Burritos", SystemClock().now())
    key = made["live_key"]
    database = engine.url.database
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    caches.start(engine)
    try:
        cache = _caching(engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            assert tenants.authenticate(conn, key) is not None
            assert cache.principal(key) is not None
            with admin.connect() as pg:
                pg.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                ended = (
                    pg.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = :db AND query = 'LISTEN punchcard_cache'"
                        ),
                        {"db": database},
                    )
                    .scalars()
                    .all()
                )
            assert ended == [True]
            _until(lambda: not cache.on, 5)
            assert (cache.on, cache.principal(key)) == (False, None)
            assert tenants.authenticate(conn, key) is not None  # read, and not kept
            assert cache.principal(key) is None
            with admin.connect() as pg:
                pg.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            _caching(engine)
            assert tenants.authenticate(conn, key) is not None
            assert cache.principal(key) is not None
    finally:
        caches.stop(engine)
        with admin.connect() as pg:
            pg.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.dispose()
        engine.dispose()
