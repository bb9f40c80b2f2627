"""Points that expired are never spent or sent, even before the worker has expired them
(rule 14: what expires at T can not be used at T)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from punchcard.errors import InsufficientPoints
from punchcard.ledger.lots import add_months
from punchcard.store.tables import outbox

from .helpers import START, burritos, expiring, new_app

ZONE = ZoneInfo("America/Chicago")


def _expired_events(engine: sa.Engine) -> list[tuple[datetime, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.created_at, outbox.c.payload)
            .where(outbox.c.type == "points.expired")
            .order_by(outbox.c.id)
        ).all()
    return [(row.created_at, row.payload["points"]) for row in rows]


def test_a_lot_past_its_expiry_is_expired_before_a_redemption_spends(engine: sa.Engine) -> None:
    app = new_app(engine, expiring("{months_after_earn: 1}"))
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)  # 300, expiring a month on
    later = START + timedelta(days=20)
    app.place_order(burritos("o2", "ann", qty=2), later)  # 200, a month after that
    app.run_due(later)
    expiry = add_months(START, 1, ZONE)
    after = expiry + timedelta(seconds=1)  # the worker has not run since
    assert app.member("ann", after).posted == 500  # what a read sees until it does
    app.redeem({"member": "ann", "reward": "five-off"}, after)  # 200: the 200 lot pays
    assert app.member("ann", after).posted == 0
    assert _expired_events(engine) == [(expiry, 300)]  # at its own time
    app.run_due(after)  # nothing is expired twice
    assert _expired_events(engine) == [(expiry, 300)]


def test_a_redemption_of_points_that_expired_is_refused_and_changes_nothing(
    engine: sa.Engine,
) -> None:
    app = new_app(engine, expiring("{months_after_earn: 1}"))
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)
    app.run_due(START)
    at_expiry = add_months(START, 1, ZONE)
    with pytest.raises(InsufficientPoints, match="five-off costs 200; 0 available"):
        app.redeem({"member": "ann", "reward": "five-off"}, at_expiry)
    assert _expired_events(engine) == []  # refused: rolled back; the worker expires them
    app.run_due(at_expiry)
    assert _expired_events(engine) == [(at_expiry, 300)]


def test_an_inactive_balance_is_expired_before_points_are_sent(engine: sa.Engine) -> None:
    app = new_app(engine, expiring("{inactivity_days: 30}"))
    app.enroll({"member": "ann"}, START)
    app.enroll({"member": "bob"}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)
    app.run_due(START)
    due = START + timedelta(days=30)
    with pytest.raises(InsufficientPoints, match="member ann has 0 points available, 100"):
        app.transfer_points({"member": "ann", "to": "bob", "points": 100}, due)
    before = due - timedelta(seconds=1)
    moved = app.transfer_points({"member": "ann", "to": "bob", "points": 100}, before)
    assert moved.points == 100
    assert (app.member("ann", before).posted, app.member("bob", before).posted) == (200, 100)
