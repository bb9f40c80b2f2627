"""Two members' requests on PostgreSQL: their system ledger rows never deadlock them, and a
request that loses a deadlock all the same runs again instead of answering 500.

Each request first does its member's due work (rule 14). ann's expires a lot and then posts an
order; bob's posts an order and then expires a lot. Expiring moves the environment's
`expired` ledger account and posting its `earned` account. When each moved its rows at once,
each request held one and waited on the other's (a deadlock, 500). The two are held after
their first step until both are there, so the old deadlock is certain, not a matter of timing.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from starlette.exceptions import StarletteDeprecationWarning

from punchcard.api.app import create_app
from punchcard.ledger import store as ledger
from punchcard.services import orders, points, tenants
from punchcard.store.database import open_database
from punchcard.store.tables import members
from punchcard.store.uow import UnitOfWork

from .helpers import burritos, expiring

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

CHICAGO = ZoneInfo("America/Chicago")
ASSET = "points:expiring"
JAN1 = datetime(2026, 1, 1, 9, tzinfo=CHICAGO)
FEB1 = datetime(2026, 2, 1, 12, tzinfo=CHICAGO)
FEB10 = datetime(2026, 2, 10, 12, tzinfo=CHICAGO)


class _Clock:
    def __init__(self) -> None:
        self.at = JAN1

    def now(self) -> datetime:
        return self.at


def _held_once(step: Callable[..., Any], both: threading.Barrier, passed: set[int]) -> Any:
    """`step`, after which each racing request waits (once) until the other is there too."""

    def wrapped(*args: Any) -> Any:
        result = step(*args)
        if threading.get_ident() not in passed:
            passed.add(threading.get_ident())  # a run again is not held
            both.wait()
        return result

    return wrapped


def _order(order_id: str, member: str, dollars: int, when: datetime) -> dict[str, Any]:
    return {**burritos(order_id, member, qty=dollars // 10), "at": when.isoformat()}


def _due_both_ways(client: TestClient, clock: _Clock) -> None:
    """bob: 300 post on 2 January 09:00 and expire on 2 February 09:00 (due: post, then
    expire). ann: 100 post on 2 January 10:00 (her next request posts them) and expire on
    2 February 10:00; 200 placed on 1 February post on 2 February 12:00 (due: expire, then
    post)."""

    def at(when: datetime, path: str, body: dict[str, Any], key: str) -> None:
        clock.at = when
        answer = client.post(path, json=body, headers={"Idempotency-Key": key})
        assert answer.status_code in (200, 201), answer.text

    source = expiring("{months_after_earn: 1}", accrual="P1D")
    at(JAN1, "/v1/programs/versions", {"source": source}, "p")
    for member in ("ann", "bob"):
        at(JAN1, "/v1/members", {"id": member}, f"m-{member}")
    at(JAN1, "/v1/orders", _order("b1", "bob", 30, JAN1), "b1")
    jan1_10 = JAN1 + timedelta(hours=1)
    at(jan1_10, "/v1/orders", _order("a1", "ann", 10, jan1_10), "a1")
    at(FEB1, "/v1/orders", _order("a2", "ann", 20, FEB1), "a2")


def _race(client: TestClient, clock: _Clock) -> dict[str, Any]:
    """ann and bob each place an order on 10 February, at once."""
    clock.at = FEB10
    answers: dict[str, Any] = {}

    def place(member: str) -> None:
        answers[member] = client.post(
            "/v1/orders",
            json=_order(f"{member}-late", member, 10, FEB10),
            headers={"Idempotency-Key": f"{member}-late"},
        )

    racers = [threading.Thread(target=place, args=(m,)) for m in ("ann", "bob")]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    return answers


@pytest.mark.postgres
def test_two_members_due_work_in_opposite_orders_does_not_deadlock(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = open_database(postgres_url)
    clock = _Clock()
    made = tenants.create_tenant(engine, "Deadlock", clock.now())
    env = made["live_environment"]
    with TestClient(create_app(engine, clock), raise_server_exceptions=False) as client:
        client.headers.update({"Authorization": f"Bearer {made['live_key']}"})
        _due_both_ways(client, clock)
        both, passed = threading.Barrier(2, timeout=20), set[int]()
        monkeypatch.setattr(
            points, "expire_due_lots", _held_once(points.expire_due_lots, both, passed)
        )
        monkeypatch.setattr(orders, "post", _held_once(orders.post, both, passed))
        with caplog.at_level(logging.INFO, logger="punchcard.api"):
            answers = _race(client, clock)
    assert {m: a.status_code for m, a in answers.items()} == {"ann": 201, "bob": 201}
    assert [r for r in caplog.records if "lost a deadlock" in r.getMessage()] == []
    with engine.connect() as conn:
        balance = {
            name: ledger.balance(conn, env, ASSET, name)
            for name in ("earned", "expired", "member:1", "member:2")
        }
        expiries = conn.execute(
            sa.text("SELECT count(*) FROM ledger_transactions WHERE kind = 'expire'")
        ).scalar_one()
    # Posted: 300 + 100 + 200; expired: bob's 300 and ann's 100; the late orders still pending.
    assert balance == {"earned": -600, "expired": 400, "member:1": 200, "member:2": 0}
    assert expiries == 2


@pytest.mark.postgres
def test_a_request_that_loses_a_deadlock_runs_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever the cycle (here each request locks the other's member after its own), the
    request PostgreSQL rolls back runs again from the start and is answered as if nothing
    had happened."""
    engine = open_database(postgres_url)
    clock = _Clock()
    made = tenants.create_tenant(engine, "Deadlock", clock.now())
    with TestClient(create_app(engine, clock), raise_server_exceptions=False) as client:
        client.headers.update({"Authorization": f"Bearer {made['live_key']}"})
        _due_both_ways(client, clock)
        both, passed = threading.Barrier(2, timeout=20), set[int]()
        place = orders.place

        def lock(uow: UnitOfWork, member: str) -> None:
            uow.conn.execute(
                sa.select(members.c.id).where(members.c.external_id == member).with_for_update()
            ).one()

        def crossing(uow: UnitOfWork, data: Any, now: datetime) -> Any:
            mine = data["member"]
            _held_once(lambda: lock(uow, mine), both, passed)()
            lock(uow, "bob" if mine == "ann" else "ann")
            return place(uow, data, now)

        monkeypatch.setattr(orders, "place", crossing)
        with caplog.at_level(logging.INFO, logger="punchcard.api"):
            answers = _race(client, clock)
    assert {m: a.status_code for m, a in answers.items()} == {"ann": 201, "bob": 201}
    # At least the one PostgreSQL broke; on a loaded machine a run again has been seen to lose
    # once more (also before 0013), and each such loss is one more run, never one more order.
    assert 1 <= len([r for r in caplog.records if "lost a deadlock" in r.getMessage()]) <= 3
    with engine.connect() as conn:
        late = conn.execute(
            sa.text("SELECT count(*) FROM orders WHERE external_id LIKE '%-late'")
        ).scalar_one()
    assert late == 2
