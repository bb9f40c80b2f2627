"""Points moved to another member under `inactivity_days`: they never outlive the deadline
they had at the sender. A receiver whose inactivity clock is running keeps it (receiving
is not activity); one whose clock is not running (no activity yet, or its balance already
expired for inactivity) starts it at the receipt, as the send restarted the sender's."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import members, outbox

from ..conftest import EXAMPLE_PROGRAM
from .helpers import START, burritos, new_app

DAY = timedelta(days=1)
MONTHS = "expiry: {months_after_earn: 12}"


def _idle(days: int) -> str:
    return EXAMPLE_PROGRAM.read_text().replace(MONTHS, f"expiry: {{inactivity_days: {days}}}")


def _earn(app: Loyalty, order_id: str, member: str, qty: int, at: datetime) -> None:
    app.place_order(burritos(order_id, member, qty=qty, at=at.isoformat()), at)
    app.run_due(at)


def _posted(app: Loyalty, at: datetime, *names: str) -> tuple[int, ...]:
    app.run_due(at)
    return tuple(app.member(name, at).posted for name in names)


def _clocks(engine: sa.Engine) -> dict[str, tuple[datetime | None, datetime | None]]:
    """Each member's (last_activity_at, inactivity_due_at)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                members.c.external_id, members.c.last_activity_at, members.c.inactivity_due_at
            )
        ).all()
    return {r.external_id: (r.last_activity_at, r.inactivity_due_at) for r in rows}


def _expired(engine: sa.Engine) -> list[tuple[str, datetime, object]]:
    """(member, time, payload) of each points.expired event, in order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(members.c.external_id, outbox.c.created_at, outbox.c.payload)
            .join(members, members.c.id == outbox.c.member_id)
            .where(outbox.c.type == "points.expired")
            .order_by(outbox.c.id)
        ).all()
    return [(r.external_id, r.created_at, r.payload) for r in rows]


def test_points_sent_to_a_member_never_active_expire_when_they_would_have_at_the_sender(
    engine: sa.Engine,
) -> None:
    """The auditor's case: bob, never active, got 100 points on day 10 and kept them for
    ever. Now they expire on day 40, with ann's rest; cat's running clock is kept (day 30)."""
    app = new_app(engine, _idle(30))
    for name in ("ann", "bob", "cat"):
        app.enroll({"member": name}, START)
    _earn(app, "o1", "ann", 3, START)  # 300
    _earn(app, "o2", "cat", 1, START)  # 100, cat's clock runs to day 30
    sent = START + 10 * DAY
    app.transfer_points({"member": "ann", "to": "bob", "points": 100}, sent)
    app.transfer_points({"member": "ann", "to": "cat", "points": 100}, sent)
    assert _clocks(engine) == {
        "ann": (sent, sent + 30 * DAY),  # sending is activity
        "bob": (sent, sent + 30 * DAY),  # receiving starts a clock that was not running
        "cat": (START, START + 30 * DAY),  # and leaves a running one alone
    }
    assert _posted(app, START + 30 * DAY - timedelta(seconds=1), "ann", "bob", "cat") == (
        100,
        100,
        200,
    )
    assert _posted(app, START + 30 * DAY, "ann", "bob", "cat") == (100, 100, 0)
    assert _posted(app, sent + 30 * DAY - timedelta(seconds=1), "ann", "bob") == (100, 100)
    assert _posted(app, sent + 30 * DAY, "ann", "bob") == (0, 0)
    assert _posted(app, START + 445 * DAY, "ann", "bob", "cat") == (0, 0, 0)
    assert _expired(engine) == [
        ("cat", START + 30 * DAY, {"points": 200, "reason": "inactivity"}),
        ("ann", sent + 30 * DAY, {"points": 100, "reason": "inactivity"}),
        ("bob", sent + 30 * DAY, {"points": 100, "reason": "inactivity"}),
    ]


def test_points_sent_to_a_member_whose_balance_already_expired_start_its_clock_again(
    engine: sa.Engine,
) -> None:
    """dan's balance expired on day 30 and his clock stopped; points he gets on day 50
    expire 30 days after the receipt, with the sender's (sending restarted ann's clock)."""
    app = new_app(engine, _idle(30))
    for name in ("ann", "dan"):
        app.enroll({"member": name}, START)
    _earn(app, "o1", "dan", 1, START)  # 100
    assert _posted(app, START + 30 * DAY, "dan") == (0,)
    assert _clocks(engine)["dan"] == (START, None)
    _earn(app, "o2", "ann", 2, START + 45 * DAY)  # 200
    sent = START + 50 * DAY
    app.transfer_points({"member": "ann", "to": "dan", "points": 150}, sent)
    assert _clocks(engine) == {
        "ann": (sent, sent + 30 * DAY),
        "dan": (sent, sent + 30 * DAY),
    }
    assert _posted(app, sent + 30 * DAY - timedelta(seconds=1), "ann", "dan") == (50, 150)
    assert _posted(app, sent + 30 * DAY, "ann", "dan") == (0, 0)
    assert _expired(engine) == [
        ("dan", START + 30 * DAY, {"points": 100, "reason": "inactivity"}),
        ("ann", sent + 30 * DAY, {"points": 50, "reason": "inactivity"}),
        ("dan", sent + 30 * DAY, {"points": 150, "reason": "inactivity"}),
    ]


def test_a_publish_re_plans_a_receivers_clock_from_the_receipt(engine: sa.Engine) -> None:
    """The receipt is the clock's start, so a new version re-plans it as it re-plans every
    member's from the last activity: a new `inactivity_days` moves it, none clears it."""
    app = new_app(engine, _idle(30))
    for name in ("ann", "bob"):
        app.enroll({"member": name}, START)
    _earn(app, "o1", "ann", 3, START)
    sent = START + 10 * DAY
    app.transfer_points({"member": "ann", "to": "bob", "points": 100}, sent)
    _earn(app, "o2", "ann", 1, START + 15 * DAY)
    app.publish(_idle(60), START + 20 * DAY)
    assert _clocks(engine) == {
        "ann": (START + 15 * DAY, START + 75 * DAY),
        "bob": (sent, sent + 60 * DAY),
    }
    assert _posted(app, sent + 60 * DAY - timedelta(seconds=1), "bob") == (100,)
    assert _posted(app, sent + 60 * DAY, "bob") == (0,)
    app.publish(EXAMPLE_PROGRAM.read_text(), START + 71 * DAY)
    assert _clocks(engine) == {
        "ann": (START + 15 * DAY, None),
        "bob": (sent, None),
    }


def test_under_a_version_without_inactivity_days_a_receipt_anchors_only_a_fresh_clock(
    engine: sa.Engine,
) -> None:
    """Without `inactivity_days` nothing expires for inactivity, but a later version that
    has it plans from each member's clock: bob's starts at his receipt, cat's stays at her
    own activity (receiving is not activity)."""
    app = new_app(engine)
    for name in ("ann", "bob", "cat"):
        app.enroll({"member": name}, START)
    _earn(app, "o1", "ann", 3, START)
    _earn(app, "o2", "cat", 1, START)
    sent = START + 10 * DAY
    app.transfer_points({"member": "ann", "to": "bob", "points": 100}, sent)
    app.transfer_points({"member": "ann", "to": "cat", "points": 100}, sent)
    assert _clocks(engine) == {"ann": (sent, None), "bob": (sent, None), "cat": (START, None)}
    app.publish(_idle(30), START + 20 * DAY)
    assert _clocks(engine) == {
        "ann": (sent, sent + 30 * DAY),
        "bob": (sent, sent + 30 * DAY),
        "cat": (START, START + 30 * DAY),
    }
    assert _posted(app, sent + 30 * DAY, "ann", "bob", "cat") == (0, 0, 0)
