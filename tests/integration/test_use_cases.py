"""Use cases on a real database: one transaction each, events in the outbox, failures change nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from punchcard.errors import InsufficientFunds, InsufficientPoints, InvalidState, NotFound
from punchcard.store.tables import ledger_postings, ledger_transactions, lots, orders, outbox

from .helpers import START, burritos, delayed, new_app


def _snapshot(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(sa.select(table)).all()]
            for name, table in (
                ("orders", orders),
                ("lots", lots),
                ("postings", ledger_postings),
                ("outbox", outbox),
            )
        }


def _events(engine: sa.Engine) -> list[tuple[str, int | None]]:
    with engine.connect() as conn:
        return [
            (r.type, r.member_seq)
            for r in conn.execute(
                sa.select(outbox.c.type, outbox.c.member_seq).order_by(outbox.c.id)
            )
        ]


@contextlib.contextmanager
def _statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL run inside the block, one line each, and the commits as "COMMIT"."""
    run: list[str] = []

    def statement(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        run.append(" ".join(sql.split()))

    def commit(_conn: object) -> None:
        run.append("COMMIT")

    sa.event.listen(engine, "before_cursor_execute", statement)
    sa.event.listen(engine, "commit", commit)
    try:
        yield run
    finally:
        sa.event.remove(engine, "before_cursor_execute", statement)
        sa.event.remove(engine, "commit", commit)


def _writes_of(run: list[str], *tables: str) -> list[str]:
    """The INSERTs and UPDATEs of `tables` in `run`, as "INSERT orders", ..."""
    verbs = {"INSERT": "INSERT INTO ", "UPDATE": "UPDATE "}
    return [
        f"{verb} {table}"
        for sql in run
        for verb, prefix in verbs.items()
        for table in tables
        if sql.startswith(f"{prefix}{table} ")
    ]


def _posted_at_close(engine: sa.Engine) -> None:
    """ann's o1 (2 burritos, 200 points) posted in its closing transaction, at START: its
    points were never pending, so no `points.pending` is sent."""
    app_events = [e for e, _ in _events(engine) if e != "program.published"]
    assert app_events == [
        "member.enrolled",
        "order.evaluated",
        "points.posted",
        "punch_card.progressed",
    ]
    assert [seq for _, seq in _events(engine) if seq is not None] == [1, 2, 3, 4]
    with engine.connect() as conn:
        order = conn.execute(sa.select(orders.c.post_state, orders.c.due_at)).one()
        lot = conn.execute(sa.select(lots.c.state, lots.c.amount, lots.c.remaining)).one()
        posted = conn.execute(
            sa.select(outbox.c.payload).where(outbox.c.type == "points.posted")
        ).scalar_one()
    assert (order.post_state, order.due_at) == ("posted", START)
    assert tuple(lot) == ("posted", 200, 200)
    assert (posted["order"], posted["points"]) == ("o1", 200)


def test_closing_an_order_writes_state_ledger_and_outbox_together(engine: sa.Engine) -> None:
    """No accrual delay: the order posts as it is placed closed, in that one transaction,
    its posting's events after its close's; the order and its lot are inserted in their
    final state, never updated to it, and the worker has nothing left to do."""
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    with _statements(engine) as run:
        app.place_order(burritos("o1", "ann", qty=2), START)
    assert run.count("COMMIT") == 1
    assert _writes_of(run, "orders", "lots") == ["INSERT orders", "INSERT lots"]
    view = app.member("ann", START)
    assert (view.posted, view.pending, view.visits, view.pending_items) == (200, 0, 1, [])
    assert app.run_due(START) == 0
    _posted_at_close(engine)


def test_an_open_order_posts_as_it_closes(engine: sa.Engine) -> None:
    """Placed open, closed an hour later: the close posts it in its own transaction (the
    order updated once, its lot inserted posted), due at the close."""
    app = new_app(engine)
    app.enroll({"member": "ann"}, START - timedelta(hours=1))
    app.place_order({**burritos("o1", "ann", qty=2), "status": "open"}, START - timedelta(hours=1))
    assert app.member("ann", START).pending_items == []  # open: nothing pending yet
    with _statements(engine) as run:
        app.close_order({"order": "o1"}, START)
    assert run.count("COMMIT") == 1
    assert _writes_of(run, "orders", "lots") == ["UPDATE orders", "INSERT lots"]
    view = app.member("ann", START)
    assert (view.posted, view.pending, view.visits) == (200, 0, 1)
    assert app.run_due(START) == 0
    _posted_at_close(engine)


def test_a_failing_use_case_changes_nothing(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann"), START)
    app.run_due(START)
    before = _snapshot(engine)
    with pytest.raises(InvalidState):
        app.place_order(burritos("o1", "ann"), START)  # the id is taken
    with pytest.raises(InsufficientPoints):
        app.redeem({"member": "ann", "reward": "five-off"}, START)
    with pytest.raises(NotFound):
        app.refund_order({"order": "nope", "all": True}, START)
    app.issue_gift_card("g1", {"amount": "5.00"}, START)
    after_issue = _snapshot(engine)
    with pytest.raises(InsufficientFunds):
        app.redeem_gift_card("g1", {"amount": "5.01"}, START)
    assert _snapshot(engine) == after_issue
    assert before["orders"] == after_issue["orders"]


def test_running_due_work_twice_changes_nothing(engine: sa.Engine) -> None:
    app = new_app(engine, delayed("PT1M"))  # each posting due a minute after its close
    names = ["ann", "bob", "cy"]  # one order each: a member's next order would post the last
    for i, name in enumerate(names):
        app.enroll({"member": name}, START)
        app.place_order(burritos(f"o{i}", name), START + timedelta(minutes=i))
    later = START + timedelta(hours=1)
    assert app.run_due(later) == 3
    first = _snapshot(engine)
    assert app.run_due(later) == 0
    assert _snapshot(engine) == first
    assert [app.member(name, later).posted for name in names] == [100, 100, 100]


def test_every_ledger_transaction_sums_to_zero_after_a_busy_day(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    now = START
    for i in range(8):
        now += timedelta(days=1)
        app.run_due(now)
        app.place_order(burritos(f"o{i}", "ann", qty=8), now)
        app.run_due(now)
    app.refund_order({"order": "o3", "lines": [{"line": "l1", "qty": 3}]}, now)
    app.void_order({"order": "o4"}, now)
    app.redeem({"member": "ann", "reward": "free-burrito"}, now)
    app.issue_gift_card("g1", {"amount": "50.00"}, now)
    app.authorize_gift_card("g1", {"amount": "20.00", "hold": "h1"}, now)
    app.capture_hold("h1", {"amount": "12.00"}, now)
    with engine.connect() as conn:
        sums = conn.execute(
            sa.select(
                ledger_postings.c.transaction_id, sa.func.sum(ledger_postings.c.amount)
            ).group_by(ledger_postings.c.transaction_id)
        ).all()
        count = conn.execute(
            sa.select(sa.func.count()).select_from(ledger_transactions)
        ).scalar_one()
    assert len(sums) == count > 10
    assert all(total == 0 for _, total in sums)
    assert app.gift_card("g1").balance == 3800


def test_the_audit_finds_a_posting_that_unbalances_a_transaction(engine: sa.Engine) -> None:
    """PostgreSQL's deferred trigger refused this at commit until 0013 dropped it (it summed
    the transaction again for every posting); `Entry` refuses it before writing, and the
    audit names it."""
    from punchcard.audit import run_audit

    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann"), START)
    app.run_due(START)
    with engine.begin() as conn:
        posting = conn.execute(sa.select(ledger_postings).order_by(ledger_postings.c.id)).first()
        assert posting is not None
        conn.execute(
            sa.insert(ledger_postings).values(
                transaction_id=posting.transaction_id, account_id=posting.account_id, amount=1
            )
        )
    broken = {f.check: f.violations for f in run_audit(engine, START)}
    assert broken["every ledger transaction sums to zero"] == [
        f"transaction {posting.transaction_id} sums to 1"
    ]


def test_the_worker_forgets_idempotency_keys_after_72_hours(engine: sa.Engine) -> None:
    from datetime import UTC, datetime

    from punchcard.store.tables import idempotency_keys
    from punchcard.worker.due_work import purge_idempotency_keys

    app = new_app(engine)
    now = datetime(2026, 3, 10, tzinfo=UTC)
    with engine.begin() as conn:
        for key, expires in (
            ("old", now - timedelta(seconds=1)),
            ("fresh", now + timedelta(hours=1)),
        ):
            conn.execute(
                sa.insert(idempotency_keys).values(
                    env_id=app.env_id,
                    api_key_id="k",
                    key=key,
                    fingerprint="f",
                    state="done",
                    locked_until=now,
                    created_at=now - timedelta(hours=72),
                    expires_at=expires,
                )
            )
    assert purge_idempotency_keys(engine, now) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(idempotency_keys.c.key)).scalars().all() == ["fresh"]


def test_the_audit_passes_on_a_busy_day_and_names_a_corrupted_balance(engine: sa.Engine) -> None:
    from punchcard.audit import run_audit
    from punchcard.store.tables import ledger_accounts

    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    now = START
    for i in range(4):
        now += timedelta(days=1)
        app.run_due(now)
        app.place_order(burritos(f"o{i}", "ann", qty=9), now)
        app.run_due(now)
    app.refund_order({"order": "o1", "lines": [{"line": "l1", "qty": 4}]}, now)
    app.void_order({"order": "o2"}, now)
    app.redeem({"member": "ann", "reward": "five-off"}, now)
    app.issue_gift_card("g1", {"amount": "30.00"}, now)
    app.authorize_gift_card("g1", {"amount": "12.00", "hold": "h1"}, now)
    app.capture_hold("h1", {"amount": "7.00"}, now)
    app.authorize_gift_card("g1", {"amount": "3.00", "hold": "h2"}, now)
    findings = run_audit(engine, now)
    assert [f.check for f in findings if not f.ok] == []
    assert findings[0].checked >= 10
    with engine.begin() as conn:  # a bug above the ledger: a cached balance drifts
        conn.execute(
            sa.update(ledger_accounts)
            .where(ledger_accounts.c.name == "card:1")
            .values(balance=ledger_accounts.c.balance + 1)
        )
    broken = {f.check: f.violations for f in run_audit(engine, now)}
    card = _account_id(engine, "card:1")  # its balance: 30.00 - 12.00 + 5.00 - 3.00 = 20.00
    assert broken["every cached balance equals its postings"] == [
        f"account card:1 ({card}) caches 2001, postings sum to 2000"
    ]


def _account_id(engine: sa.Engine, name: str) -> int:
    from punchcard.store.tables import ledger_accounts

    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(ledger_accounts.c.id).where(ledger_accounts.c.name == name)
            ).scalar_one()
        )
