"""`punchcard audit`: every invariant of the books, checked on a live database.

Read-only. Each check counts its violations and shows a few examples; the audit
passes when every count is zero. The checks are the guarantees the ledger, the
holds, the lots, the outbox and the orders promise (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from punchcard.store.tables import (
    holds,
    ledger_accounts,
    ledger_postings,
    ledger_transactions,
    lots,
    members,
    orders,
    outbox,
    webhook_messages,
)

STUCK_AFTER = timedelta(minutes=5)  # due work older than this, with workers running, is stuck


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
        ).outerjoin(totals, totals.c.account_id == ledger_accounts.c.id)
    ).all()
    return len(rows), [
        f"account {r.name} ({r.id}) caches {r.balance}, postings sum to {r.total or 0}"
        for r in rows
        if r.balance != (r.total or 0)
    ]


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
    balances = conn.execute(
        sa.select(ledger_accounts.c.name, ledger_accounts.c.balance).where(
            ledger_accounts.c.name.in_(names)
        )
    ).all()
    bad = []
    for name, balance in balances:
        member = names[name]
        remaining = int(left.get(member.id, 0) or 0)
        if (balance >= 0 and remaining != balance) or (balance < 0 and remaining != 0):
            bad.append(f"member {member.external_id}: posted {balance}, lots hold {remaining}")
    return len(balances), bad


def _orders_accrued_once(conn: sa.Connection, _now: datetime) -> tuple[int, list[str]]:
    """A posted order's earnings less its clawbacks never exceed what it posted, and an order
    that posted points has exactly one first earning (posted once, never twice)."""
    earned = (
        sa.select(
            ledger_transactions.c.env_id,
            ledger_transactions.c.reference,
            sa.func.sum(sa.case((ledger_transactions.c.kind == "earn", 1), else_=0)).label("earns"),
        )
        .where(ledger_transactions.c.reference.like("order:%"))
        .group_by(ledger_transactions.c.env_id, ledger_transactions.c.reference)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            orders.c.external_id,
            orders.c.post_state,
            orders.c.posted_points,
            orders.c.state,
            earned.c.earns,
        )
        .outerjoin(
            earned,
            sa.and_(
                earned.c.env_id == orders.c.env_id,
                earned.c.reference == "order:" + orders.c.external_id,
            ),
        )
        .where(orders.c.post_state == "posted")
    ).all()
    bad = [
        f"order {r.external_id} posted {r.posted_points} points but has no earning"
        for r in rows
        if r.posted_points > 0 and not r.earns
    ]
    return len(rows), bad


def _outbox_published(conn: sa.Connection, now: datetime) -> tuple[int, list[str]]:
    late = conn.execute(
        sa.select(outbox.c.id, outbox.c.type).where(
            outbox.c.published_at.is_(None), outbox.c.created_at < now - STUCK_AFTER
        )
    ).all()
    unmatched = conn.execute(
        sa.select(outbox.c.id)
        .outerjoin(webhook_messages, webhook_messages.c.outbox_id == outbox.c.id)
        .where(outbox.c.published_at.is_not(None), webhook_messages.c.id.is_(None))
    ).all()
    total = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
    return total, [f"event {r.id} ({r.type}) not published after 5 minutes" for r in late] + [
        f"event {r.id} published without a message" for r in unmatched
    ]


def _no_stuck_postings(conn: sa.Connection, now: datetime) -> tuple[int, list[str]]:
    rows = conn.execute(
        sa.select(orders.c.external_id, orders.c.due_at).where(
            orders.c.post_state == "pending", orders.c.due_at < now - STUCK_AFTER
        )
    ).all()
    pending = conn.execute(
        sa.select(sa.func.count()).select_from(orders).where(orders.c.post_state == "pending")
    ).scalar_one()
    return pending, [f"order {r.external_id} was due at {r.due_at.isoformat()}" for r in rows]


CHECKS: list[tuple[str, Callable[[sa.Connection, datetime], tuple[int, list[str]]]]] = [
    ("every ledger transaction sums to zero", _transactions_balance),
    ("every cached balance equals its postings", _balances_match_postings),
    ("no gift card below zero", _cards_not_negative),
    ("every transfer moves value between two cards or two members", _transfers_between_peers),
    ("every hold resolved at most once, its money where its state says", _holds_resolved_once),
    ("points lots match posted balances", _lots_match_balances),
    ("every posted order earned exactly once", _orders_accrued_once),
    ("every committed event published as a webhook message", _outbox_published),
    ("no posting stuck past its time", _no_stuck_postings),
]


def run_audit(engine: sa.Engine, now: datetime) -> list[Finding]:
    """All checks in one read-only snapshot (where the database offers one)."""
    with engine.connect() as conn:
        findings = []
        for name, check in CHECKS:
            checked, violations = check(conn, now)
            findings.append(Finding(name, checked, violations))
        conn.rollback()
    return findings
