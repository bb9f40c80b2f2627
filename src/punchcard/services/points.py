"""Points on the ledger: earning (debts first, then a lot), clawbacks, spending, transfers and expiry."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from punchcard.engine.programs import Program
from punchcard.ledger import store as ledger
from punchcard.ledger.entries import EARNED, EXPIRED, REDEEMED, points_asset, transfer
from punchcard.ledger.lots import Lot, add_months, plan_clawback, split_earning, take_oldest
from punchcard.lifecycle.machines import POINTS_LOT
from punchcard.services.context import due_by, member_by_id, version_at
from punchcard.store import hot
from punchcard.store.tables import lots, members
from punchcard.store.uow import Event, UnitOfWork


def account(member_id: int) -> str:
    return f"member:{member_id}"


def posted_balance(uow: UnitOfWork, program: Program, member_id: int) -> int:
    return ledger.balance(uow.conn, uow.env_id, points_asset(program.program), account(member_id))


def lot_expiry(program: Program, posted_at: datetime) -> datetime | None:
    expiry = program.expiry
    if expiry is None or expiry.months_after_earn is None:
        return None
    return add_months(posted_at, expiry.months_after_earn, program.zone)


# Built once: every posting runs them.
_TOUCH = sa.update(members).where(members.c.id == sa.bindparam("b_id"))
UPDATE_LOT = sa.update(lots).where(lots.c.id == sa.bindparam("b_lot"))  # SET: the parameters
INSERT_LOT = sa.insert(lots)  # built once: its values are the parameters


def activity(program: Program, at: datetime) -> dict[str, Any]:
    """A non-zero earning, clawback or redemption restarts the inactivity clock: the member's
    columns that say so."""
    expiry = program.expiry
    due = None
    if expiry is not None and expiry.inactivity_days is not None:
        due = at + timedelta(days=expiry.inactivity_days)
    return {"last_activity_at": at, "inactivity_due_at": due}


def touch_activity(uow: UnitOfWork, program: Program, member_id: int, at: datetime) -> None:
    hot.later(uow.conn, _TOUCH, {"b_id": member_id, **activity(program, at)})


def _start_stopped_clock(uow: UnitOfWork, program: Program, member_id: int, at: datetime) -> None:
    """Start the member's inactivity clock at `at` if it is not running: no activity yet, or
    (under `inactivity_days`) its balance already expired for inactivity. Points it comes to
    hold without activity would otherwise never expire. Starting it as activity does (from
    `last_activity_at`) lets a publish re-plan it like any member's."""
    stopped = [members.c.last_activity_at.is_(None)]
    if program.expiry is not None and program.expiry.inactivity_days is not None:
        stopped.append(members.c.inactivity_due_at.is_(None))
    uow.conn.execute(
        sa.update(members)
        .where(members.c.id == member_id, sa.or_(*stopped))
        .values(**activity(program, at))
    )


def earn(
    uow: UnitOfWork,
    program: Program,
    member_id: int,
    points: int,
    at: datetime,
    order_id: int | None,
    *,
    order_ref: str,
    lot_id: int | None = None,
    touch: bool = True,
) -> datetime | None:
    """Post `points` (> 0): they pay any debt first, the rest forms a lot. `touch=False`: the
    caller writes `activity` with the member's other changes, in one statement, and the lot's
    expiry it returns as the member's due work (`save_state(due=...)`)."""
    balances = ledger.write(
        uow.conn,
        uow.env_id,
        transfer(
            points_asset(program.program),
            "earn",
            EARNED,
            account(member_id),
            points,
            f"order:{order_ref}",
        ),
        at,
    )
    split = split_earning(balances[account(member_id)] - points, points)
    values = {
        "state": "posted" if split.lot else "spent",
        "amount": points,
        "remaining": split.lot,
        "posted_at": at,
        "expires_at": lot_expiry(program, at),
    }
    if lot_id is None:
        hot.later(
            uow.conn,
            INSERT_LOT,
            {"env_id": uow.env_id, "member_id": member_id, "order_id": order_id, **values},
        )
    else:
        hot.later(uow.conn, UPDATE_LOT, {"b_lot": lot_id, **values})
    expiring = lot_expiry(program, at) if split.lot else None
    if touch:
        touch_activity(uow, program, member_id, at)
        due_by(uow, member_id, expiring)
    uow.record(
        Event(
            "points.posted",
            at,
            {"points": points, "paid_debt": split.pays_debt, "order": order_ref},
            member_id,
        )
    )
    return None if touch else expiring


_LIVE_LOTS = (
    sa.select(lots.c.id, lots.c.order_id, lots.c.remaining)
    .where(lots.c.member_id == sa.bindparam("b_member"), lots.c.state == "posted")
    .where(lots.c.remaining > 0)
    .order_by(lots.c.posted_at, lots.c.id)
)


def _live_lots(uow: UnitOfWork, member_id: int) -> list[Lot]:
    rows = hot.rows(uow.conn, _LIVE_LOTS, {"b_member": member_id})
    return [Lot(r.id, r.order_id, r.remaining, seq) for seq, r in enumerate(rows)]


def _take(uow: UnitOfWork, lots_left: dict[int, int], parts: list[tuple[int, int]]) -> None:
    for lot_id, part in parts:
        left = lots_left[lot_id] - part
        state = (
            POINTS_LOT.target("posted", "spent or clawed back to zero") if left == 0 else "posted"
        )
        hot.later(uow.conn, UPDATE_LOT, {"b_lot": lot_id, "remaining": left, "state": state})


def claw_back(
    uow: UnitOfWork,
    program: Program,
    member_id: int,
    points: int,
    at: datetime,
    order_id: int,
    *,
    order_ref: str,
) -> None:
    """Take back `points` (> 0): the order's own lot, then the oldest; the rest per negative_balance."""
    live = _live_lots(uow, member_id)
    plan = plan_clawback(live, points, order_id, program.earn.negative_balance)
    _take(uow, {lot.id: lot.remaining for lot in live}, plan.from_lots)
    if plan.posted:
        ledger.write(
            uow.conn,
            uow.env_id,
            transfer(
                points_asset(program.program),
                "clawback",
                account(member_id),
                EARNED,
                plan.posted,
                f"order:{order_ref}",
            ),
            at,
        )
    touch_activity(uow, program, member_id, at)
    uow.record(
        Event(
            "points.reversed",
            at,
            {"points": points, "debt": plan.debt, "dropped": plan.dropped, "order": order_ref},
            member_id,
        )
    )


def spend(
    uow: UnitOfWork, program: Program, member_id: int, points: int, at: datetime, reference: str
) -> None:
    """Spend posted points oldest lot first; the caller has checked the balance covers them."""
    live = _live_lots(uow, member_id)
    _take(uow, {lot.id: lot.remaining for lot in live}, take_oldest(live, points))
    ledger.write(
        uow.conn,
        uow.env_id,
        transfer(
            points_asset(program.program), "redeem", account(member_id), REDEEMED, points, reference
        ),
        at,
    )
    touch_activity(uow, program, member_id, at)


def move(
    uow: UnitOfWork,
    program: Program,
    source_id: int,
    target_id: int,
    points: int,
    at: datetime,
    reference: str,
) -> int:
    """Move posted points between members; the caller has locked both and checked the balance.

    The source gives its oldest lots first. Each part keeps its age at the target (the
    time it was earned, hence its place in spending order, and its expiry); the parts pay
    any debt of the target first, oldest first. Returns the points that paid a debt.
    Tier progress does not move: nothing was earned. Sending is activity; receiving is not,
    but starts a target's stopped inactivity clock, so the parts expire no later than they
    would have at the source (whose clock the send restarted).
    """
    rows = uow.conn.execute(
        sa.select(lots.c.id, lots.c.remaining, lots.c.posted_at, lots.c.expires_at)
        .where(lots.c.member_id == source_id, lots.c.state == "posted", lots.c.remaining > 0)
        .order_by(lots.c.posted_at, lots.c.id)
    ).all()
    origin = {r.id: r for r in rows}
    taken = take_oldest([Lot(r.id, None, r.remaining, seq) for seq, r in enumerate(rows)], points)
    if sum(part for _, part in taken) != points:
        raise AssertionError(f"member {source_id}: lots hold less than the posted balance")
    debt = max(0, -posted_balance(uow, program, target_id))
    _take(uow, {r.id: r.remaining for r in rows}, taken)
    ledger.write(
        uow.conn,
        uow.env_id,
        transfer(
            points_asset(program.program),
            "transfer",
            account(source_id),
            account(target_id),
            points,
            reference,
        ),
        at,
    )
    paid = 0
    for lot_id, part in taken:
        pays = min(debt - paid, part)
        paid += pays
        uow.conn.execute(
            sa.insert(lots).values(
                env_id=uow.env_id,
                member_id=target_id,
                order_id=None,
                state="posted" if part - pays else "spent",
                amount=part,
                remaining=part - pays,
                posted_at=origin[lot_id].posted_at,
                expires_at=origin[lot_id].expires_at,
            )
        )
    expiring = [origin[lot_id].expires_at for lot_id, part in taken if part]
    due_by(uow, target_id, min((e for e in expiring if e is not None), default=None))
    touch_activity(uow, program, source_id, at)
    _start_stopped_clock(uow, program, target_id, at)
    return paid


def expire_lots(
    uow: UnitOfWork, program: Program, member_id: int, lot_rows: list[Any], at: datetime, why: str
) -> None:
    """Expire what is left of the given lots (one ledger entry for all of them)."""
    if not lot_rows:
        return
    total = sum(row.remaining for row in lot_rows)
    uow.conn.execute(
        sa.update(lots)
        .where(lots.c.id.in_([r.id for r in lot_rows]))
        .values(remaining=0, state="expired")
    )
    if total <= 0:
        return
    ledger.write(
        uow.conn,
        uow.env_id,
        transfer(points_asset(program.program), "expire", account(member_id), EXPIRED, total, why),
        at,
    )
    uow.record(Event("points.expired", at, {"points": total, "reason": why}, member_id))


def expire_due_lots(uow: UnitOfWork, member_id: int, moment: datetime) -> None:
    """Due work: what is left of the member's lots that expire at or before `moment`."""
    member_by_id(uow, member_id)
    rows = uow.conn.execute(
        sa.select(lots.c.id, lots.c.remaining).where(
            lots.c.member_id == member_id, lots.c.state == "posted", lots.c.expires_at <= moment
        )
    ).all()
    program = version_at(uow, moment).program
    expire_lots(uow, program, member_id, list(rows), moment, "months_after_earn")


def expire_inactive(uow: UnitOfWork, member_id: int, moment: datetime) -> None:
    """Due work: the whole balance of a member inactive for `inactivity_days` by `moment`."""
    member = member_by_id(uow, member_id)
    if member.inactivity_due_at is None or member.inactivity_due_at > moment:
        return
    rows = uow.conn.execute(
        sa.select(lots.c.id, lots.c.remaining).where(
            lots.c.member_id == member_id, lots.c.state == "posted", lots.c.remaining > 0
        )
    ).all()
    program = version_at(uow, moment).program
    expire_lots(uow, program, member_id, list(rows), moment, "inactivity")
    uow.conn.execute(
        sa.update(members).where(members.c.id == member_id).values(inactivity_due_at=None)
    )
