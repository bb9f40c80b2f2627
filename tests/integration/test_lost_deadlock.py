"""Two members' requests that deadlock on PostgreSQL are both answered: the one the database
rolls back runs again (it answered 500 before).

Each request first does its member's due work (rule 14). ann's expires a lot and then posts an
order; bob's posts an order and then expires a lot. Expiring writes the environment's
`expired` ledger account and posting its `earned` account, so each waits on the row the
other holds. The two are held at that point until both are there, so the deadlock is
certain, not a matter of timing.
"""

from __future__ import annotations

import logging
import threading
import warnings
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

from .helpers import burritos, expiring

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

CHICAGO = ZoneInfo("America/Chicago")
ASSET = "points:expiring"


class _Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=CHICAGO)

    def now(self) -> datetime:
        return self.at


def _held_after_first_step(monkeypatch: pytest.MonkeyPatch) -> threading.Barrier:
    """Each racing request waits, after the first step of its due work (with that step's
    ledger row locked), until the other has done its own first step."""
    both = threading.Barrier(2, timeout=20)
    passed: set[int] = set()

    def held(step: Any) -> Any:
        def wrapped(*args: Any) -> Any:
            result = step(*args)
            if threading.get_ident() not in passed:
                passed.add(threading.get_ident())  # a run again is not held
                both.wait()
            return result

        return wrapped

    monkeypatch.setattr(points, "expire_due_lots", held(points.expire_due_lots))
    monkeypatch.setattr(orders, "post", held(orders.post))
    return both


@pytest.mark.postgres
def test_a_request_that_loses_a_deadlock_runs_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = open_database(postgres_url)
    clock = _Clock()
    made = tenants.create_tenant(engine, "Deadlock", clock.now())
    env = made["live_environment"]

    def at(client: TestClient, when: datetime, path: str, body: dict[str, Any], key: str) -> Any:
        clock.at = when
        answer = client.post(path, json=body, headers={"Idempotency-Key": key})
        assert answer.status_code in (200, 201), answer.text
        return answer

    def order(order_id: str, member: str, dollars: int, when: datetime) -> dict[str, Any]:
        return {**burritos(order_id, member, qty=dollars // 10), "at": when.isoformat()}

    jan1 = datetime(2026, 1, 1, 9, tzinfo=CHICAGO)
    feb1 = datetime(2026, 2, 1, 12, tzinfo=CHICAGO)
    feb10 = datetime(2026, 2, 10, 12, tzinfo=CHICAGO)
    with TestClient(create_app(engine, clock), raise_server_exceptions=False) as client:
        client.headers.update({"Authorization": f"Bearer {made['live_key']}"})
        source = expiring("{months_after_earn: 1}", accrual="P1D")
        at(client, jan1, "/v1/programs/versions", {"source": source}, "p")
        for member in ("ann", "bob"):
            at(client, jan1, "/v1/members", {"id": member}, f"m-{member}")
        # bob: 300 post on 2 January 09:00 and expire on 2 February 09:00.
        at(client, jan1, "/v1/orders", order("b1", "bob", 30, jan1), "b1")
        # ann: 100 post on 2 January 10:00 (her next request posts them) and expire on
        # 2 February 10:00; 200 placed on 1 February post on 2 February 12:00.
        jan1_10 = jan1 + timedelta(hours=1)
        at(client, jan1_10, "/v1/orders", order("a1", "ann", 10, jan1_10), "a1")
        at(client, feb1, "/v1/orders", order("a2", "ann", 20, feb1), "a2")

        _held_after_first_step(monkeypatch)
        clock.at = feb10
        answers: dict[str, Any] = {}

        def place(member: str) -> None:
            body = order(f"{member}-late", member, 10, feb10)
            answers[member] = client.post(
                "/v1/orders", json=body, headers={"Idempotency-Key": f"{member}-late"}
            )

        racers = [threading.Thread(target=place, args=(m,)) for m in ("ann", "bob")]
        with caplog.at_level(logging.INFO, logger="punchcard.api"):
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join(60)
    assert {m: a.status_code for m, a in answers.items()} == {"ann": 201, "bob": 201}
    lost = [r for r in caplog.records if "lost a deadlock" in r.getMessage()]
    assert len(lost) == 1
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
