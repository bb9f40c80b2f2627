"""`punchcard audit`: every invariant of the books, checked on a live database.

Read-only. Each check counts its violations and shows a few examples; the audit
passes when every count is zero. The checks are the guarantees the ledger, the
holds, the lots, the outbox and the orders promise (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from punchcard.ledger.entries import EARNED
from punchcard.ledger.store import snapshot
from punchcard.services.due import describe, still_due
from punchcard.services.webhooks import after
from punchcard.store.database import reading
from punchcard.store.tables import (
    due_failures,
    environments,
    holds,
    ledger_accounts,
    ledger_postings,
    ledger_transactions,
    lots,
    members,
    orders,
    outbox,
    rewards,
    webhook_endpoints,
)

# Due work or an event older than this in its environment's own time, with workers running,
# is stuck: a worker's round is 0.2 s, a crashed worker's lease lapses after 30 s.
STUCK_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class Finding:
    check: str
    checked: int
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


def _transactions_balance(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    sums = conn.execute(
        sa.select(
            ledger_postings.c.transaction_id, sa.func.sum(ledger_postings.c.amount).label("total")
        ).group_by(ledger_postings.c.transaction_id)
    ).all()
    return len(sums), [
        f"transaction {r.transaction_id} sums to {r.total}" for r in sums if r.total != 0
    ]


def _balances_match_postings(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    """Cached balances only: a system account caches none (NULL), its balance is the sum."""
    totals = (
        sa.select(
            ledger_postings.c.account_id, sa.func.sum(ledger_postings.c.amount).label("total")
        )
        .group_by(ledger_postings.c.account_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            ledger_accounts.c.id, ledger_accounts.c.name, ledger_accounts.c.balance, totals.c.total
        )
        .outerjoin(totals, totals.c.account_id == ledger_accounts.c.id)
        .where(ledger_accounts.c.balance.is_not(None))
    ).all()
    return len(rows), [
        f"account {r.name} ({r.id}) caches {r.balance}, postings sum to {r.total or 0}"
        for r in rows
        if r.balance != (r.total or 0)
    ]


def _rows_refer_to_rows(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    """What the foreign keys 0013 dropped from the hot tables guarded: every row's
    environment exists, and every posting's account."""
    checked, bad = 0, []
    for table in (orders, lots, ledger_accounts, ledger_transactions):
        rows = conn.execute(
            sa.select(table.c.id, table.c.env_id)
            .outerjoin(environments, environments.c.id == table.c.env_id)
            .where(environments.c.id.is_(None))
            .order_by(table.c.id)
        ).all()
        checked += conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        bad += [
            f"{table.name} {r.id} is in environment {r.env_id}, which does not exist" for r in rows
        ]
    postings = conn.execute(
        sa.select(ledger_postings.c.id, ledger_postings.c.account_id)
        .outerjoin(ledger_accounts, ledger_accounts.c.id == ledger_postings.c.account_id)
        .where(ledger_accounts.c.id.is_(None))
        .order_by(ledger_postings.c.id)
    ).all()
    checked += conn.execute(sa.select(sa.func.count()).select_from(ledger_postings)).scalar_one()
    bad += [f"posting {r.id} is on account {r.account_id}, which does not exist" for r in postings]
    return checked, bad


def _transfers_between_peers(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    """A transfer moves value from one card to another, or one member to another: it never
    creates or destroys value, and never touches a system account or a hold."""
    rows = conn.execute(
        sa.select(
            ledger_transactions.c.id,
            ledger_transactions.c.reference,
            ledger_accounts.c.name,
            ledger_postings.c.amount,
        )
        .join(ledger_postings, ledger_postings.c.transaction_id == ledger_transactions.c.id)
        .join(ledger_accounts, ledger_accounts.c.id == ledger_postings.c.account_id)
        .where(ledger_transactions.c.kind == "transfer")
        .order_by(ledger_transactions.c.id, ledger_postings.c.id)
    ).all()
    postings: dict[int, list[tuple[str, int]]] = {}
    references: dict[int, str] = {}
    for r in rows:
        postings.setdefault(r.id, []).append((r.name, r.amount))
        references[r.id] = r.reference
    bad = []
    for txn, legs in postings.items():
        kinds = {name.split(":", 1)[0] for name, _ in legs}
        names = {name for name, _ in legs}
        if len(legs) != 2 or len(names) != 2 or len(kinds) != 1 or kinds - {"card", "member"}:
            bad.append(f"transfer {references[txn]} moves {legs}")
    return len(postings), bad


def _cards_not_negative(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    rows = conn.execute(
        sa.select(ledger_accounts.c.name, ledger_accounts.c.balance).where(
            ledger_accounts.c.name.like("card:%")
        )
    ).all()
    return len(rows), [f"{r.name} is at {r.balance}" for r in rows if r.balance < 0]


def _holds_resolved_once(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    held = sa.select(ledger_accounts.c.name, ledger_accounts.c.balance).where(
        ledger_accounts.c.name.like("hold:%")
    )
    balances = {r.name: r.balance for r in conn.execute(held).all()}
    rows = conn.execute(sa.select(holds)).all()
    bad = []
    for r in rows:
        in_hold = balances.get(f"hold:{r.id}", 0)
        pending = r.state == "pending"
        if r.state not in ("pending", "captured", "voided", "released"):
            bad.append(f"hold {r.external_id} is {r.state}")
        elif pending != (r.resolved_at is None) or (r.state == "captured") != (
            r.captured is not None
        ):
            bad.append(
                f"hold {r.external_id} is {r.state} with resolved_at={r.resolved_at} captured={r.captured}"
            )
        elif in_hold != (r.amount if pending else 0):
            bad.append(f"hold {r.external_id} is {r.state} but its account holds {in_hold}")
    return len(rows), bad


def _lots_match_balances(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    left = dict(
        conn.execute(
            sa.select(lots.c.member_id, sa.func.sum(lots.c.remaining))
            .where(lots.c.state == "posted")
            .group_by(lots.c.member_id)
        ).all()
    )
    rows = conn.execute(sa.select(members.c.id, members.c.external_id)).all()
    names = {f"member:{r.id}": r for r in rows}
    found = conn.execute(  # by prefix, not a list of names: 100,000 members pass 65,535
        sa.select(ledger_accounts.c.name, ledger_accounts.c.balance).where(
            ledger_accounts.c.name.like("member:%")
        )
    ).all()
    balances = [(name, balance) for name, balance in found if name in names]
    bad = []
    for name, balance in balances:
        member = names[name]
        remaining = int(left.get(member.id, 0) or 0)
        if (balance >= 0 and remaining != balance) or (balance < 0 and remaining != 0):
            bad.append(f"member {member.external_id}: posted {balance}, lots hold {remaining}")
    return len(balances), bad


def _orders_points_on_ledger(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    """Exact in every legal history: the points the ledger moved to an order's member under
    the order's reference (earnings less clawbacks), less what `clamp` dropped from its
    clawbacks (rule 11; recorded only in the points.reversed events, written in the same
    transaction), are what the order has posted. Debts, transfers and expiry carry other
    references, so they never enter; an order's points only ever move between `earned` and
    its member."""
    member = "member:" + sa.cast(orders.c.member_id, sa.String)
    elsewhere = sa.case((ledger_accounts.c.name.in_([member, EARNED]), 0), else_=1)
    moved = (
        sa.select(
            orders.c.id,
            sa.func.sum(
                sa.case((ledger_accounts.c.name == member, ledger_postings.c.amount), else_=0)
            ).label("points"),
            sa.func.sum(elsewhere).label("stray"),
        )
        .join(
            ledger_transactions,
            sa.and_(
                ledger_transactions.c.env_id == orders.c.env_id,
                ledger_transactions.c.reference == "order:" + orders.c.external_id,
                ledger_transactions.c.asset.like("points:%"),
            ),
        )
        .join(ledger_postings, ledger_postings.c.transaction_id == ledger_transactions.c.id)
        .join(ledger_accounts, ledger_accounts.c.id == ledger_postings.c.account_id)
        .group_by(orders.c.id)
        .subquery()
    )
    order_ref = outbox.c.payload["order"].as_string()
    dropped = (
        sa.select(
            outbox.c.env_id,
            order_ref.label("order_ref"),
            sa.func.sum(outbox.c.payload["dropped"].as_integer()).label("points"),
        )
        .where(outbox.c.type == "points.reversed")
        .group_by(outbox.c.env_id, order_ref)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            orders.c.external_id,
            orders.c.post_state,
            orders.c.posted_points,
            sa.func.coalesce(moved.c.points, 0).label("moved"),
            sa.func.coalesce(moved.c.stray, 0).label("stray"),
            sa.func.coalesce(dropped.c.points, 0).label("dropped"),
        )
        .outerjoin(moved, moved.c.id == orders.c.id)
        .outerjoin(
            dropped,
            sa.and_(
                dropped.c.env_id == orders.c.env_id, dropped.c.order_ref == orders.c.external_id
            ),
        )
    ).all()
    bad = []
    for r in rows:
        posted = r.posted_points if r.post_state == "posted" else 0
        if r.stray:
            bad.append(f"order {r.external_id} moves points on an account not its member's")
        elif r.posted_points != posted or r.dropped < 0 or r.moved - r.dropped != posted:
            bad.append(
                f"order {r.external_id} has posted_points {r.posted_points} ({r.post_state});"
                f" the ledger moved {r.moved} for it and clamp dropped {r.dropped}"
            )
    return len(rows), bad


def _own_nows(conn: sa.Connection, now: datetime) -> dict[str, datetime]:
    """Each environment's own now, by `environment_now`'s rule (a sandbox's clock, else the
    system clock), for all of them in one query: due times and event times are in it."""
    rows = conn.execute(sa.select(environments.c.id, environments.c.clock)).all()
    return {r.id: (r.clock or now).astimezone(UTC) for r in rows}


def _outbox_sent(conn: sa.Connection, now: datetime) -> tuple[int, list[str]]:
    """Every enabled endpoint's cursor is past every event more than 5 minutes old in its
    environment's own time: a sender that stopped leaves its cursor behind one. (An event
    whose send failed is past the cursor, waiting as a delivery on the retry schedule.)"""
    nows = _own_nows(conn, now)
    endpoints = conn.execute(
        sa.select(
            webhook_endpoints.c.id,
            webhook_endpoints.c.env_id,
            webhook_endpoints.c.cursor_tx,
            webhook_endpoints.c.cursor_id,
        )
        .join(environments, environments.c.id == webhook_endpoints.c.env_id)
        .where(
            webhook_endpoints.c.state == "enabled",
            webhook_endpoints.c.deleted_at.is_(None),
            environments.c.deleted_at.is_(None),
        )
        .order_by(webhook_endpoints.c.id)
    ).all()
    late = []
    for endpoint in endpoints:
        first = conn.execute(  # the endpoint's next event, by the (env_id, tx, id) index
            sa.select(outbox.c.id, outbox.c.type, outbox.c.created_at)
            .where(
                outbox.c.env_id == endpoint.env_id,
                after(outbox.c.tx, outbox.c.id, endpoint.cursor_tx, endpoint.cursor_id),
            )
            .order_by(outbox.c.tx, outbox.c.id)
            .limit(1)
        ).first()
        if first is not None and first.created_at < nows[endpoint.env_id] - STUCK_AFTER:
            late.append(
                f"event {first.id} ({first.type}) not sent to endpoint {endpoint.id}"
                " after 5 minutes"
            )
    total = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
    return total, late


def _no_stuck_postings(conn: sa.Connection, now: datetime) -> tuple[int, list[str]]:
    """Judged by each environment's own now: a sandbox whose clock is behind has orders due
    in its future, not stuck. A deleted sandbox's due work is never done, by design."""
    nows = _own_nows(conn, now)
    rows = conn.execute(
        sa.select(orders.c.env_id, orders.c.external_id, orders.c.due_at)
        .join(environments, environments.c.id == orders.c.env_id)
        .where(orders.c.post_state == "pending", environments.c.deleted_at.is_(None))
    ).all()
    return len(rows), [
        f"order {r.external_id} was due at {r.due_at.isoformat()},"
        f" its environment's now is {nows[r.env_id].isoformat()}"
        for r in rows
        if r.due_at < nows[r.env_id] - STUCK_AFTER
    ]


def _no_due_work_set_aside(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    """Due work that failed and waits for its next try (services/due.py), with its member's
    later work: each is a bug or a row the database refuses, for an operator to look at. One
    done meanwhile by its member's requests is not listed (the worker forgets it)."""
    rows = conn.execute(
        sa.select(due_failures)
        .join(environments, environments.c.id == due_failures.c.env_id)
        .where(environments.c.deleted_at.is_(None))
        .order_by(due_failures.c.env_id, due_failures.c.due_at, due_failures.c.id)
    ).all()
    stuck = [r for r in rows if still_due(conn, r)]
    return len(rows), [
        f"{describe(conn, r.kind, r.item_id, r.member_id)} in environment {r.env_id}, due at"
        f" {r.due_at.isoformat()}: failed {r.failures}x since {r.first_failed_at.isoformat()}"
        f" ({r.error}), next try at {r.next_try_at.isoformat()}"
        for r in stuck
    ]


def _next_due_bounds_due_work(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    """A member's `next_due_at` is never after its earliest lot expiry, reward lapse or posting:
    `catch_up` trusts it to skip looking, so a write that made due work and did not lower it
    would let a request run before that work (rule 14). Checked in SQL, member by member."""
    earliest = sa.union_all(
        sa.select(lots.c.member_id, lots.c.expires_at.label("at")).where(
            lots.c.state == "posted", lots.c.expires_at.is_not(None)
        ),
        sa.select(rewards.c.member_id, rewards.c.expires_at).where(rewards.c.state == "available"),
        sa.select(orders.c.member_id, orders.c.due_at).where(orders.c.post_state == "pending"),
    ).subquery()
    first = (
        sa.select(earliest.c.member_id, sa.func.min(earliest.c.at).label("at"))
        .group_by(earliest.c.member_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(members.c.env_id, members.c.external_id, members.c.next_due_at, first.c.at)
        .join(first, first.c.member_id == members.c.id)
        .where(sa.or_(members.c.next_due_at.is_(None), members.c.next_due_at > first.c.at))
    ).all()
    checked = conn.execute(sa.select(sa.func.count()).select_from(members)).scalar_one()
    return int(checked), [
        f"member {r.external_id} in environment {r.env_id} has work due at {r.at.isoformat()}"
        f" but its next_due_at says {r.next_due_at.isoformat() if r.next_due_at else 'never'}"
        for r in rows
    ]


CHECKS: list[tuple[str, Callable[[sa.Connection, datetime], tuple[int, list[str]]]]] = [
    ("every ledger transaction sums to zero", _transactions_balance),
    ("every cached balance equals its postings", _balances_match_postings),
    ("every row's environment and every posting's account exist", _rows_refer_to_rows),
    ("no gift card below zero", _cards_not_negative),
    ("every transfer moves value between two cards or two members", _transfers_between_peers),
    ("every hold resolved at most once, its money where its state says", _holds_resolved_once),
    ("points lots match posted balances", _lots_match_balances),
    ("every order's points on the ledger equal what it posted", _orders_points_on_ledger),
    ("every committed event sent to every enabled endpoint", _outbox_sent),
    ("no posting stuck past its time", _no_stuck_postings),
    ("no due work set aside after failing", _no_due_work_set_aside),
    ("every member's next due time is no later than its due work", _next_due_bounds_due_work),
]


def run_audit(engine: sa.Engine, now: datetime) -> list[Finding]:
    """All checks in one read-only snapshot, taking no write lock: they compare tables that
    live traffic changes together."""
    with reading(engine) as conn:
        snapshot(conn)
        findings = []
        for name, check in CHECKS:
            checked, violations = check(conn, now)
            findings.append(Finding(name, checked, violations))
        conn.rollback()
    return findings
