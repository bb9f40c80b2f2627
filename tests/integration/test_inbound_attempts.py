"""An inbound event that must wait for its order counts each failed try once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from punchcard.services import inbound
from punchcard.store.database import open_database
from punchcard.store.tables import inbound_events
from punchcard.store.uow import UnitOfWork

from .helpers import FakeClock, burritos, new_app, send_inbound

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def _refund_before_its_order(engine: sa.Engine) -> int:
    app = new_app(engine)
    body = json.dumps(
        {"id": "evt_1", "type": "order.refunded", "order": {"id": "o1"}, "refund": {"all": True}}
    ).encode()
    assert send_inbound(engine, app.env_id, body, NOW)
    with engine.connect() as conn:
        return int(conn.execute(sa.select(inbound_events.c.id)).scalar_one())


def _attempts(engine: sa.Engine) -> tuple[str, int, datetime]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                inbound_events.c.state, inbound_events.c.attempts, inbound_events.c.next_attempt_at
            )
        ).one()
    return row.state, row.attempts, row.next_attempt_at


def test_two_workers_failing_one_try_count_one_attempt(engine: sa.Engine) -> None:
    """A worker whose claim outlived its lease and the worker that took the event over both
    find no order. Each read the event at 0 attempts; only the first count stands, so the
    pause doubles from 1 s without skipping a step."""
    event = _refund_before_its_order(engine)
    clock = FakeClock(NOW)
    inbound._apply(engine, event, clock)
    assert _attempts(engine) == ("pending", 1, NOW + timedelta(seconds=1))
    clock.at = NOW + timedelta(milliseconds=300)  # the overlapping worker, which also read 0
    inbound._wait_or_fail(engine, event, clock, "not_found: no order 'o1'", seen=0)
    assert _attempts(engine) == ("pending", 1, NOW + timedelta(seconds=1))
    clock.at = NOW + timedelta(seconds=1)
    inbound._apply(engine, event, clock)
    assert _attempts(engine) == ("pending", 2, NOW + timedelta(seconds=3))


def test_the_thirteenth_failed_try_marks_the_event_failed(engine: sa.Engine) -> None:
    event = _refund_before_its_order(engine)
    clock = FakeClock(NOW)
    for _ in range(inbound.MAX_ATTEMPTS - 1):
        inbound._apply(engine, event, clock)
    state, attempts, due = _attempts(engine)
    assert (state, attempts) == ("pending", 12)
    assert due == NOW + timedelta(seconds=2048)
    inbound._apply(engine, event, clock)
    assert _attempts(engine)[:2] == ("failed", 13)
    with engine.connect() as conn:
        outcome = conn.execute(sa.select(inbound_events.c.outcome)).scalar_one()
    assert outcome.startswith("not_found: ")


@pytest.mark.postgres
def test_an_event_whose_database_connection_dies_waits_and_is_applied_later(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database, not the event: a connection killed while the order was being placed
    (a restart, a lost deadlock) left the event failed for good; it waits like a try that
    found no order, and applies on the next."""
    engine = open_database(postgres_url)
    app = new_app(engine, start=NOW)
    app.enroll({"member": "ann"}, NOW)
    order = {**burritos("o1", "ann"), "status": "closed", "at": NOW.isoformat()}
    body = json.dumps({"id": "evt_1", "type": "order.placed", "order": order}).encode()
    assert send_inbound(engine, app.env_id, body, NOW)
    with engine.connect() as conn:
        event = int(conn.execute(sa.select(inbound_events.c.id)).scalar_one())
    place = inbound._USE_CASES["place"]

    def killed(uow: UnitOfWork, data: object, now: datetime) -> None:
        uow.conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setitem(inbound._USE_CASES, "place", killed)
    clock = FakeClock(NOW)
    inbound._apply(engine, event, clock)
    assert _attempts(engine) == ("pending", 1, NOW + timedelta(seconds=1))
    with engine.connect() as conn:
        outcome = conn.execute(sa.select(inbound_events.c.outcome)).scalar_one()
    assert outcome == "waiting: database: AdminShutdown"
    monkeypatch.setitem(inbound._USE_CASES, "place", place)
    clock.at = NOW + timedelta(seconds=1)
    inbound._apply(engine, event, clock)
    assert _attempts(engine)[:2] == ("done", 1)
    ann = app.member("ann", clock.at)
    assert (ann.posted, ann.pending) == (100, 0)  # placed and closed once, posted as it closed
