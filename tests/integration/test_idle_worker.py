"""An idle worker is idle (issue 18, part 6): with nothing due it writes nothing and sends one
read a round; work that falls due is still done within a round of its time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from punchcard.services.clock import SystemClock
from punchcard.services.loyalty import Loyalty
from punchcard.services.programs import create_environment
from punchcard.store.database import create_engine
from punchcard.store.tables import orders
from punchcard.worker.due_work import Worker

from .helpers import burritos, expiring

INTERVAL_S = 0.2


@contextmanager
def running(worker: Worker) -> Iterator[None]:
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(timeout=10)


def _stats(admin: sa.Engine, database: str) -> dict[str, int]:
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        row = conn.execute(
            sa.text(
                "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted"
                " FROM pg_stat_database WHERE datname = :name"
            ),
            {"name": database},
        ).one()
    return dict(row._mapping)


def _backends_gone(admin: sa.Engine, database: str) -> None:
    """Wait for the database's sessions to end: a backend reports its counts as it exits."""
    for _ in range(100):
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                {"name": database},
            ).scalar()
        if not left:
            time.sleep(0.5)  # and for the last of them to have reported
            return
        time.sleep(0.05)
    raise AssertionError(f"sessions on {database} did not end")


@pytest.mark.postgres
def test_an_idle_worker_writes_nothing_and_reads_once_a_round(postgres_url: str) -> None:
    """Three environments (one a sandbox at its own clock), members, a posted order and a
    planned expiry, nothing due: over two seconds the worker sent only SELECTs, one a round
    plus one look for inbound events a second, and the database counted no row written and
    no transaction but those reads. (Each claimed every environment and released it,
    updating `environments` each round, with a purge and an inbound claim: ~15 commits/s.)"""
    setup = create_engine(postgres_url)
    now = SystemClock().now()
    for clock in (None, None, datetime(2026, 3, 3, tzinfo=UTC)):
        app = Loyalty(setup, create_environment(setup, "idle", now, clock=clock))
        app.publish(expiring("{months_after_earn: 12}"), clock or now)
        app.enroll({"member": "ann"}, clock or now)
        app.place_order(burritos("o1", "ann"), clock or now)
        assert app.run_due(clock or SystemClock().now()) == 0  # posted as it closed: nothing due
    with setup.begin() as conn:  # autovacuum's work on these tables would write rows meanwhile
        for table in sa.inspect(conn).get_table_names():
            conn.exec_driver_sql(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
    setup.dispose()
    database = sa.make_url(postgres_url).database
    assert database is not None
    admin = sa.create_engine(sa.make_url(postgres_url).set(database="postgres"))
    engine = create_engine(postgres_url)
    with engine.connect():  # SQLAlchemy's first look at the server (its version), not counted
        pass
    engine.dispose()
    sent: list[str] = []
    commits: list[int] = []
    sessions: list[int] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        sent.append(statement)

    @sa.event.listens_for(engine, "commit")
    def _commit(_c: Any) -> None:
        commits.append(1)

    @sa.event.listens_for(engine, "connect")
    def _connected(_c: Any, _r: Any) -> None:
        sessions.append(1)

    _backends_gone(admin, database)
    control = _stats(admin, database)
    assert Worker(engine, SystemClock()).run_once() == 0  # one round in a session of its own,
    engine.dispose()  # to learn what a session counts besides its statements
    _backends_gone(admin, database)
    before = _stats(admin, database)
    assert len(sent) == 3 and len(sessions) == 1  # environments, inbound events, purge
    per_session = before["xact_commit"] - control["xact_commit"] - len(sent)
    sent.clear()
    sessions.clear()
    with running(Worker(engine, SystemClock(), INTERVAL_S)):
        time.sleep(2.0)
    engine.dispose()  # its sessions report their counts as they end
    _backends_gone(admin, database)
    after = _stats(admin, database)
    assert [s.split()[0] for s in sent] == ["SELECT"] * len(sent)
    assert commits == []
    # One read a round (rounds pause 0.2 s), one look for inbound events a second and one
    # for expired idempotency keys at the start: ~14 in 2 s, where it was ~240 round trips.
    assert 5 <= len(sent) <= 16  # fewer when a busy machine slows the rounds
    delta = {k: after[k] - before[k] for k in after}
    # No row written. Each read ran alone in autocommit, which PostgreSQL counts as a committed
    # transaction (with no transaction id and no WAL), as it counts a session's start: nothing
    # else the worker did committed. (The autovacuum launcher's visits to the database count
    # there too, a few a minute: the upper bound leaves room for them.)
    assert {k: v for k, v in delta.items() if k != "xact_commit"} == {
        "tup_inserted": 0,
        "tup_updated": 0,
        "tup_deleted": 0,
    }
    assert 0 <= delta["xact_commit"] - len(sent) - per_session * len(sessions) <= 3
    admin.dispose()


def test_a_posting_due_in_a_second_posts_within_a_round_of_its_time(engine: sa.Engine) -> None:
    """Idle rounds find nothing; the round after the posting falls due does it."""
    now = SystemClock().now()
    app = Loyalty(engine, create_environment(engine, "soon", now))
    app.publish(expiring("{months_after_earn: 12}", accrual="PT1S"), now)
    app.enroll({"member": "ann"}, now)
    app.place_order(burritos("o1", "ann"), now)
    with engine.connect() as conn:
        due_at = conn.execute(sa.select(orders.c.due_at)).scalar_one()
    assert due_at == now + timedelta(seconds=1)
    worker = Worker(engine, SystemClock(), INTERVAL_S)
    with running(worker):
        posted_by = None
        while SystemClock().now() < due_at + timedelta(seconds=5):
            with engine.connect() as conn:
                state = conn.execute(sa.select(orders.c.post_state)).scalar_one()
            if state == "posted":
                posted_by = SystemClock().now()
                break
            time.sleep(0.02)
    assert posted_by is not None
    # Within one round of its time (a round pauses 0.2 s), plus the round's own work on a
    # shared machine: never the next idle period of inbound looks or purges.
    assert posted_by - due_at < timedelta(seconds=INTERVAL_S + 0.5)
