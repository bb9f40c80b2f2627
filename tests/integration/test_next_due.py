"""`members.next_due_at` (migration 0015): a request reads the member's due work only when the
member's row says some may be due, and the bound is lowered by whatever makes due work, so rule
14 still holds: what fell due before a request is done before it. The audit checks the bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from punchcard.audit import run_audit
from punchcard.services import due
from punchcard.store.tables import lots, members, orders, outbox

from .helpers import START, burritos, expiring, new_app
from .test_due_set_aside import _allow, _refuse

BOUND = "every member's next due time is no later than its due work"


def _next_due(engine: sa.Engine, member: str = "ann") -> datetime | None:
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(members.c.next_due_at).where(members.c.external_id == member)
        ).scalar_one()
    return found  # type: ignore[no-any-return]


def _due_reads(engine: sa.Engine) -> list[str]:
    """The statements that look for a member's due work (`catch_up`'s query)."""
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "members.window_end <=" in statement:
            seen.append(statement)

    return seen


def _events(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(outbox.c.type).order_by(outbox.c.id)).scalars().all()
    return [t for t in rows if t != "program.published"]


def _bound_violations(engine: sa.Engine, now: datetime) -> list[str]:
    (found,) = [f for f in run_audit(engine, now) if f.check == BOUND]
    return found.violations


def test_a_member_with_nothing_due_is_not_looked_up(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    assert _next_due(engine) is None  # nothing made yet
    reads = _due_reads(engine)
    app.place_order(burritos("o1", "ann"), START)
    with engine.connect() as conn:
        expiry = conn.execute(sa.select(lots.c.expires_at)).scalar_one()
    assert expiry == datetime(2027, 3, 3, 15, 0, tzinfo=UTC)  # 12 months after earning
    assert _next_due(engine) == expiry  # the posting's lot lowered it, in its own statement
    app.place_order(burritos("o2", "ann"), START + timedelta(hours=1))
    assert reads == []  # neither order looked for due work: none could be due
    assert _next_due(engine) == expiry  # the later lot does not raise it
    assert _bound_violations(engine, START) == []


def test_work_due_when_the_bound_passes_is_done_first_and_the_bound_moves_on(
    engine: sa.Engine,
) -> None:
    app = new_app(engine, expiring("{months_after_earn: 1}"))
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann"), START)
    first = _next_due(engine)
    assert first == datetime(2026, 4, 3, 14, 0, tzinfo=UTC)
    reads = _due_reads(engine)
    later = START + timedelta(days=40)  # the worker never ran: the request does the expiry
    app.place_order(burritos("o2", "ann"), later)
    assert len(reads) == 2  # looked (the bound had passed), and again after the expiry
    events = _events(engine)
    assert events.index("points.expired") < max(
        i for i, e in enumerate(events) if e == "order.evaluated"
    )
    assert app.member("ann", later).posted == 100  # o1's 100 expired, o2's 100 posted
    assert _next_due(engine) == (later + timedelta(days=30)).astimezone(UTC)  # o2's lot
    assert _bound_violations(engine, later) == []


def test_a_pending_posting_and_a_reward_lower_the_bound(engine: sa.Engine) -> None:
    app = new_app(engine, expiring("{months_after_earn: 12}", accrual="PT1H"))
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=2), START)  # 200 points, pending an hour
    assert _next_due(engine) == (START + timedelta(hours=1)).astimezone(UTC)
    assert _bound_violations(engine, START) == []
    redeemed = START + timedelta(hours=2)
    app.redeem({"member": "ann", "reward": "five-off"}, redeemed)  # o1 posts first
    assert app.member("ann", redeemed).posted == 0
    assert _next_due(engine) == (redeemed + timedelta(days=30)).astimezone(UTC)  # the reward
    assert _bound_violations(engine, redeemed) == []


def test_the_audit_finds_a_bound_later_than_the_work(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann"), START)
    with engine.begin() as conn:
        conn.execute(sa.update(members).values(next_due_at=datetime(2030, 1, 1, tzinfo=UTC)))
    assert _bound_violations(engine, START) == [
        f"member ann in environment {app.env_id} has work due at 2027-03-03T15:00:00+00:00"
        " but its next_due_at says 2030-01-01T00:00:00+00:00"
    ]


def test_a_delay_0_order_waits_for_its_members_failed_due_work(engine: sa.Engine) -> None:
    """A reward lapse that fails (set aside for the worker) comes before the member's next
    order's posting (rule 14): that order stays pending, and the worker posts it after the lapse
    once the lapse can be done, instead of the request posting it at once ahead of it."""
    wall = datetime(2026, 3, 3, 16, 0, tzinfo=UTC)
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=5), START)
    app.redeem({"member": "ann", "reward": "five-off", "as": "ann-5"}, START)
    _refuse(engine, "rewards", "OLD.alias = 'ann-5'")
    lapsed = START + timedelta(days=61)
    assert due.run_due(app.uow, lapsed, wall) == 0  # the lapse failed: set aside
    app.place_order(burritos("o2", "ann"), lapsed)  # its catch-up fails the lapse again
    with engine.connect() as conn:
        states = dict(conn.execute(sa.select(orders.c.external_id, orders.c.post_state)).all())
    assert states == {"o1": "posted", "o2": "pending"}
    _allow(engine, "rewards")
    assert due.run_due(app.uow, lapsed, wall + timedelta(seconds=10)) == 2  # lapse, then post
    assert _events(engine)[-5:] == [
        "order.evaluated",  # o2 closed at once, pending: the lapse before it had failed
        "points.pending",
        "reward.expired",  # then the worker: the lapse first, at its own time
        "points.posted",
        "punch_card.progressed",
    ]
    assert app.member("ann", lapsed).posted == 100  # o1's 500 spent on the reward, o2's 100
    assert _bound_violations(engine, lapsed) == []
