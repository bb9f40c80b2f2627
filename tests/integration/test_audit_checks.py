"""The audit's order and due-time checks: clean on every legal history, exact on corruption.

One database holds a year of stories: refunds after posting under `allow` (a debt, paid by a
later earning and by a transfer) and under `clamp` (a clawback that finds nothing left is
dropped), an edit, a void, expiry, and sandboxes whose clocks are behind the system clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from punchcard.audit import run_audit
from punchcard.ledger import store as ledger
from punchcard.ledger.entries import EARNED, points_asset, transfer
from punchcard.services import webhooks
from punchcard.services.loyalty import Loyalty
from punchcard.services.programs import create_environment
from punchcard.store.tables import (
    environments,
    ledger_accounts,
    ledger_postings,
    ledger_transactions,
    members,
    orders,
    outbox,
    webhook_endpoints,
)
from punchcard.worker.delivery import Deliverer

from ..conftest import EXAMPLE_PROGRAM
from .cursors import run
from .helpers import START, FakeClock, burritos, new_app

ORDERS = "every order's points on the ledger equal what it posted"
STUCK = "no posting stuck past its time"
OUTBOX = "every committed event sent to every enabled endpoint"
SYSTEM_NOW = START + timedelta(days=500)  # the system clock, ahead of every sandbox below
DELAYED = EXAMPLE_PROGRAM.read_text().replace("accrual_delay: PT0S", "accrual_delay: P1D")


def _set_clock(engine: sa.Engine, app: Loyalty, at: datetime | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(environments).where(environments.c.id == app.env_id).values(clock=at)
        )


def _publish(engine: sa.Engine) -> None:
    """What a worker does with committed events: send them to the endpoints (here refused,
    so each is tried once and waits as a delivery), moving each endpoint's cursor on."""
    deliverer = Deliverer(engine, FakeClock(SYSTEM_NOW), threads=1)
    while run(deliverer):
        pass


def _allow(engine: sa.Engine) -> Loyalty:
    """Debts: carl owes 500 after a refund, pays 200 by earning and 300 by ann's transfer;
    ann's o4 gains by an edit and loses by a refund, o5 is voided after posting; a year on,
    what is left of ann's lots expires."""
    app = new_app(engine)
    for name in ("ann", "bob", "carl"):
        app.enroll({"member": name}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)
    app.place_order(burritos("o2", "carl", qty=6), START)
    app.run_due(START)
    app.redeem({"member": "carl", "reward": "five-off"}, START)
    app.refund_order({"order": "o2", "all": True}, START)
    assert app.member("carl", START).posted == -500
    day = START + timedelta(days=1)
    app.place_order(burritos("o3", "carl", qty=2, at=day), day)
    app.run_due(day)
    app.transfer_points({"member": "ann", "to": "carl", "points": 300}, day)
    assert (app.member("ann", day).posted, app.member("carl", day).posted) == (0, 0)
    day += timedelta(days=1)
    for order in ("o4", "o5"):
        app.place_order(burritos(order, "ann", qty=4, at=day), day)
    app.run_due(day)
    app.edit_order({"order": "o4", "lines": burritos("o4", "ann", qty=5)["lines"]}, day)
    app.refund_order({"order": "o4", "lines": [{"line": "l1", "qty": 2}]}, day)
    app.void_order({"order": "o5"}, day)
    assert app.member("ann", day).posted == 300
    year = START + timedelta(days=400)
    app.run_due(year)
    assert app.member("ann", year).posted == 0
    _set_clock(engine, app, year)
    return app


def _clamp(engine: sa.Engine) -> Loyalty:
    """The auditor's t10: ann sends 200 of o1's 300 to bob, o1 is refunded: 100 comes back
    from its lot, 200 is dropped; then o2 earns a lot of its own (no debt to pay)."""
    app = new_app(engine, EXAMPLE_PROGRAM.read_text().replace("allow", "clamp"))
    for name in ("ann", "bob"):
        app.enroll({"member": name}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)
    app.run_due(START)
    app.transfer_points({"member": "ann", "to": "bob", "points": 200}, START)
    app.refund_order({"order": "o1", "all": True}, START)
    app.place_order(burritos("o2", "ann", qty=1), START)
    app.run_due(START)
    assert (app.member("ann", START).posted, app.member("bob", START).posted) == (100, 200)
    return app


def _frozen(engine: sa.Engine) -> Loyalty:
    """A sandbox frozen at START, its orders due a day later: in its future, not stuck; its
    events are left unsent to its endpoint a moment, as the deliverer may."""
    app = new_app(engine, DELAYED)
    with engine.begin() as conn:
        webhooks.create_endpoint(
            conn, app.env_id, {"url": "http://127.0.0.1:9/hooks"}, START, allow_private=True
        )
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("p1", "ann", qty=2), START)
    app.place_order(burritos("p2", "ann", qty=1), START)
    app.refund_order({"order": "p2", "all": True}, START)
    app.void_order({"order": "p2"}, START)  # withdrawn: nothing of it will ever post
    return app


def _story(engine: sa.Engine) -> dict[str, Loyalty]:
    stories = {"allow": _allow(engine), "clamp": _clamp(engine)}
    stories["frozen"] = _frozen(engine)
    return stories


def _broken(engine: sa.Engine, now: datetime = SYSTEM_NOW) -> dict[str, list[str]]:
    return {f.check: f.violations for f in run_audit(engine, now) if not f.ok}


def test_the_audit_is_clean_on_every_legal_history(engine: sa.Engine) -> None:
    _story(engine)
    findings = {f.check: f for f in run_audit(engine, SYSTEM_NOW)}
    assert [(f.check, f.violations) for f in findings.values() if not f.ok] == []
    assert findings[ORDERS].checked == 9  # o1-o5, o1-o2, p1-p2
    assert findings[STUCK].checked == 1  # p1


def test_an_orders_points_are_checked_exactly(engine: sa.Engine) -> None:
    stories = _story(engine)
    clamp, allow = stories["clamp"], stories["allow"]
    with engine.begin() as conn:  # a bug: o1 (fully refunded under clamp) says it kept 1
        conn.execute(
            sa.update(orders)
            .where(orders.c.env_id == clamp.env_id, orders.c.external_id == "o1")
            .values(posted_points=1)
        )
    assert _broken(engine) == {
        ORDERS: [
            "order o1 has posted_points 1 (posted); the ledger moved 200 for it and clamp dropped 200"
        ]
    }
    with engine.begin() as conn:  # and back; now o4's earning reaches ann's account once more
        conn.execute(
            sa.update(orders)
            .where(orders.c.env_id == clamp.env_id, orders.c.external_id == "o1")
            .values(posted_points=0)
        )
        earning = (
            sa.select(ledger_postings.c.id)
            .join(ledger_transactions, ledger_transactions.c.id == ledger_postings.c.transaction_id)
            .join(ledger_accounts, ledger_accounts.c.id == ledger_postings.c.account_id)
            .where(
                ledger_transactions.c.env_id == allow.env_id,
                ledger_transactions.c.reference == "order:o4",
                ledger_transactions.c.kind == "earn",
                ledger_accounts.c.name != EARNED,
            )
            .limit(1)
            .scalar_subquery()
        )
        conn.execute(
            sa.update(ledger_postings)
            .where(ledger_postings.c.id == earning)
            .values(amount=ledger_postings.c.amount + 1)
        )
    assert _broken(engine)[ORDERS] == [
        "order o4 has posted_points 300 (posted); the ledger moved 301 for it and clamp dropped 0"
    ]


def test_an_orders_points_go_only_to_its_member(engine: sa.Engine) -> None:
    clamp = _story(engine)["clamp"]
    with engine.begin() as conn:  # a bug: o2 earns for bob too
        bob = conn.execute(
            sa.select(members.c.id).where(
                members.c.env_id == clamp.env_id, members.c.external_id == "bob"
            )
        ).scalar_one()
        entry = transfer(
            points_asset("burrito-rewards"), "earn", EARNED, f"member:{bob}", 100, "order:o2"
        )
        ledger.write(conn, clamp.env_id, entry, START)
    assert _broken(engine)[ORDERS] == ["order o2 moves points on an account not its member's"]


def test_each_environment_is_judged_stuck_by_its_own_now(engine: sa.Engine) -> None:
    frozen = _story(engine)["frozen"]
    due = START + timedelta(days=1)
    _set_clock(engine, frozen, due + timedelta(minutes=5))  # the worker's lag: not yet stuck
    late = [
        f"event {n} ({kind}) not sent to endpoint {endpoint} after 5 minutes"
        for n, kind, endpoint in _unsent(engine)
    ]
    assert _broken(engine) == {OUTBOX: late}  # events of a day ago (in its time) are late
    _publish(engine)
    assert _broken(engine) == {}
    _set_clock(engine, frozen, due + timedelta(minutes=6))  # moved on without its due work
    assert _broken(engine) == {
        STUCK: [
            "order p1 was due at 2026-03-04T15:00:00+00:00,"
            " its environment's now is 2026-03-04T15:06:00+00:00"
        ]
    }
    with engine.begin() as conn:  # a deleted sandbox's due work is never done, by design
        conn.execute(
            sa.update(environments)
            .where(environments.c.id == frozen.env_id)
            .values(deleted_at=SYSTEM_NOW)
        )
    assert _broken(engine) == {}


def test_an_environment_on_the_system_clock_is_judged_by_it(engine: sa.Engine) -> None:
    live = Loyalty(engine, create_environment(engine, "live", START))
    live.publish(DELAYED, START)
    live.enroll({"member": "ann"}, START)
    live.place_order(burritos("q1", "ann"), START)
    due = START + timedelta(days=1)
    assert _broken(engine, due + timedelta(minutes=5)) == {}
    assert _broken(engine, due + timedelta(minutes=6)) == {
        STUCK: [
            "order q1 was due at 2026-03-04T15:00:00+00:00,"
            " its environment's now is 2026-03-04T15:06:00+00:00"
        ]
    }
    live.run_due(due)
    assert _broken(engine, SYSTEM_NOW) == {}


def _unsent(engine: sa.Engine) -> list[tuple[int, str, str]]:
    """Each endpoint's first event after its cursor (here, the frozen sandbox's one)."""
    with engine.connect() as conn:
        [endpoint] = conn.execute(sa.select(webhook_endpoints)).all()
        first = conn.execute(
            sa.select(outbox.c.id, outbox.c.type)
            .where(
                outbox.c.env_id == endpoint.env_id,
                webhooks.after(outbox.c.tx, outbox.c.id, endpoint.cursor_tx, endpoint.cursor_id),
            )
            .order_by(outbox.c.tx, outbox.c.id)
            .limit(1)
        ).one()
    return [(first.id, first.type, endpoint.id)]
