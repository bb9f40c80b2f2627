"""A request that changes a member first does the member's due work up to its time (rule
14), so what it does is the same whether the worker is on time or behind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from punchcard.ledger.lots import add_months
from punchcard.services import orders
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import members, outbox

from .helpers import START, burritos, expiring, new_app

WINDOWS = """
program: window-edits
name: Window Edits
currency: USD
timezone: America/Chicago
earn: {points_per_unit: 10, accrual_delay: PT0S}
tiers:
  metric: points
  window: calendar_year
  levels:
    - {id: member, threshold: 0}
    - {id: gold, threshold: 1000, multiplier: 1.25}
"""
CST = timezone(timedelta(hours=-6))
VISITS = """visits: {min_spend: "5.00"}
punch_cards:
  - {id: tenth-visit, goal: 10, reward: five-off}
"""


@pytest.fixture
def make(engine: sa.Engine) -> Callable[[str, datetime], Loyalty]:
    return lambda program, start=START: new_app(engine, program, start=start)


def test_an_order_due_to_post_before_an_inactivity_expiry_keeps_the_balance(
    make: Callable[..., Loyalty],
) -> None:
    """o2 posts on day 30 and restarts the 30-day clock: nothing expires on day 31."""
    for on_time in (True, False):
        app = make(expiring("{inactivity_days: 30}", accrual="P1D"))
        app.enroll({"member": "ann"}, START)
        app.place_order(burritos("o1", "ann", qty=3), START)  # posts on day 1
        app.run_due(START + timedelta(days=1))
        app.place_order(burritos("o2", "ann", qty=1), START + timedelta(days=29))  # day 30
        later = START + timedelta(days=32)
        if on_time:
            app.run_due(later)
        app.redeem({"member": "ann", "reward": "five-off"}, later)
        assert app.member("ann", later).posted == 200, on_time


def test_a_refund_claws_back_after_the_expiry_before_it(make: Callable[..., Loyalty]) -> None:
    """o1's 300 expired a month on; refunding o1 then leaves a debt of 200 (o2's 100 taken
    first, the rest owed), worker on time or not."""
    expired = add_months(START, 1, ZoneInfo("America/Chicago"))
    for on_time in (True, False):
        app = make(expiring("{months_after_earn: 1}"))
        app.enroll({"member": "ann"}, START)
        app.place_order(burritos("o1", "ann", qty=3), START)
        app.place_order(burritos("o2", "ann", qty=1), START + timedelta(days=20))
        later = expired + timedelta(seconds=1)
        app.run_due(later if on_time else START + timedelta(days=20))
        app.refund_order({"order": "o1", "all": True}, later)
        assert app.member("ann", later).posted == -200, on_time


def test_an_edit_in_a_new_year_counts_in_the_new_year(
    engine: sa.Engine, make: Callable[..., Loyalty]
) -> None:
    """900 in 2026; an edit on 2 January 2027 adds 200, to 2027's progress, not 2026's
    (which would have made her gold for 2027)."""
    start = datetime(2026, 12, 30, 12, tzinfo=CST)
    for on_time in (True, False):
        app = make(WINDOWS, start)
        app.enroll({"member": "ann"}, start)
        app.place_order(burritos("o1", "ann", qty=9), start)
        app.run_due(start)
        later = datetime(2027, 1, 2, 12, tzinfo=CST)
        if on_time:
            app.run_due(later)
        edited = [
            {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 11, "unit_price": "10.00"}
        ]
        app.edit_order({"order": "o1", "lines": edited}, later)
        app.run_due(later)
        with engine.connect() as conn:
            tier, progress = conn.execute(
                sa.select(members.c.tier, members.c.progress).where(members.c.env_id == app.env_id)
            ).one()
        assert (tier, progress, app.member("ann", later).posted) == ("member", 200, 1100)


def test_points_sent_to_a_member_past_its_inactivity_expiry_are_kept(
    engine: sa.Engine, make: Callable[..., Loyalty]
) -> None:
    """Bob's 100 expired on day 30; the 300 ann sends on day 31 start his clock again and
    stay, instead of being swept by an expiry dated before they came."""
    for on_time in (True, False):
        app = make(expiring("{inactivity_days: 30}"))
        for name in ("ann", "bob"):
            app.enroll({"member": name}, START)
        app.place_order(burritos("o1", "ann", qty=3), START)
        app.place_order(burritos("o2", "bob", qty=1), START)
        active = START + timedelta(days=20)
        app.place_order(burritos("o3", "ann", qty=1), active)
        app.run_due(active)
        later = START + timedelta(days=31)
        if on_time:
            app.run_due(later)
        app.transfer_points({"member": "ann", "to": "bob", "points": 300}, later)
        app.run_due(later)
        assert app.member("bob", later).posted == 300, on_time
        with engine.connect() as conn:
            expired = conn.execute(
                sa.select(outbox.c.created_at, outbox.c.payload)
                .join(members, members.c.id == outbox.c.member_id)
                .where(members.c.env_id == app.env_id, outbox.c.type == "points.expired")
            ).all()
        assert [(e.created_at, e.payload["points"]) for e in expired] == [
            (START + timedelta(days=30), 100)
        ]


def test_a_withdrawn_visit_takes_its_punch_step_in_the_timeline_too(
    engine: sa.Engine, make: Callable[..., Loyalty]
) -> None:
    """Followers of member events see the punch card go back down, not only up."""
    app = make(expiring("{months_after_earn: 12}").replace("rewards:", VISITS + "rewards:"))
    app.enroll({"member": "ned"}, START)
    app.place_order(burritos("o1", "ned", qty=1), START)
    app.run_due(START)
    app.refund_order({"order": "o1", "all": True}, START + timedelta(hours=1))
    with engine.connect() as conn:
        counts = [
            payload["count"]
            for payload in conn.execute(
                sa.select(outbox.c.payload)
                .join(members, members.c.id == outbox.c.member_id)
                .where(members.c.env_id == app.env_id, outbox.c.type == "punch_card.progressed")
                .order_by(outbox.c.id)
            ).scalars()
        ]
    assert counts == [1, 0]
    assert app.member("ned", START + timedelta(hours=1)).punch_cards == {"tenth-visit": 0}


def test_a_posting_that_fails_in_a_request_is_left_to_the_worker(
    engine: sa.Engine, make: Callable[..., Loyalty], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request goes on as if the worker were behind; nothing of the failed work stays.
    (Points post a minute after the close: with no delay an order posts as it closes.)"""
    app = make(expiring("{months_after_earn: 12}", accrual="PT1M"))
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)  # due a minute later, not yet posted
    real = orders.post

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(orders, "post", broken)
    later = START + timedelta(hours=1)
    app.place_order(burritos("o2", "ann", qty=1), later)  # catch-up fails, the order stands
    with engine.connect() as conn:
        kinds = (
            conn.execute(
                sa.select(outbox.c.type)
                .join(members, members.c.id == outbox.c.member_id)
                .where(members.c.env_id == app.env_id)
                .order_by(outbox.c.id)
            )
            .scalars()
            .all()
        )
    assert kinds == ["member.enrolled", *["order.evaluated", "points.pending"] * 2]
    assert app.member("ann", later).pending == 400
    monkeypatch.setattr(orders, "post", real)
    assert app.run_due(later) == 1  # o1; o2 is due a minute after its close
    assert (app.member("ann", later).posted, app.member("ann", later).pending) == (300, 100)
    assert app.run_due(later + timedelta(minutes=1)) == 1
    assert app.member("ann", later + timedelta(minutes=1)).posted == 400
