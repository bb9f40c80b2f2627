"""Due work: everything that falls due with time, done in time order (rule 14).

`run_due(now)` repeatedly finds the earliest moment at which anything is due and does,
at that moment and in this order: tier windows, expiries (lots, inactivity, rewards,
holds), postings in close order. Each item is done under its member's lock and re-checks
that it is still due, so running twice changes nothing and a crash between items loses
nothing.

Postings, the bulk of the work, go up to `POST_GROUP` to a transaction: one commit (and
one WAL flush) for the group instead of one each. The group's members are locked first,
in id order, the order every request takes two members' locks in, so a group never
deadlocks with a request. If a group fails, its postings are redone one per transaction,
so one bad posting holds back only itself and those after it. Other kinds are rare and go
one per transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from punchcard.engine.members import roll_window, window_bounds
from punchcard.lifecycle.machines import NEW_WINDOW, REWARD, tier_machine
from punchcard.services import gift_cards, orders, points
from punchcard.services.context import member_by_id, record_tier, save_state, state_of, version_at
from punchcard.services.uow_factory import UowFactory
from punchcard.store.tables import holds, lots, members, rewards
from punchcard.store.tables import orders as orders_table
from punchcard.store.uow import Event, UnitOfWork

log = logging.getLogger("punchcard.worker")
BATCH = 200  # items looked up per query
POST_GROUP = 25  # postings per transaction


def _due_queries(env_id: str, now: datetime) -> list[Any]:
    return [
        sa.select(sa.func.min(members.c.window_end)).where(
            members.c.env_id == env_id, members.c.window_end <= now
        ),
        sa.select(sa.func.min(lots.c.expires_at)).where(
            lots.c.env_id == env_id, lots.c.state == "posted", lots.c.expires_at <= now
        ),
        sa.select(sa.func.min(members.c.inactivity_due_at)).where(
            members.c.env_id == env_id, members.c.inactivity_due_at <= now
        ),
        sa.select(sa.func.min(rewards.c.expires_at)).where(
            rewards.c.env_id == env_id, rewards.c.state == "available", rewards.c.expires_at <= now
        ),
        sa.select(sa.func.min(holds.c.expires_at)).where(
            holds.c.env_id == env_id, holds.c.state == "pending", holds.c.expires_at <= now
        ),
        sa.select(sa.func.min(orders_table.c.due_at)).where(
            orders_table.c.env_id == env_id,
            orders_table.c.post_state == "pending",
            orders_table.c.due_at <= now,
        ),
    ]


def _due_times(uow: UnitOfWork, now: datetime) -> list[datetime | None]:
    """The earliest due time of each kind (None: nothing due by `now`), in one round trip."""
    queries = _due_queries(uow.env_id, now)
    return list(uow.conn.execute(sa.select(*(q.scalar_subquery() for q in queries))).one())


def next_due(uow: UnitOfWork, now: datetime) -> datetime | None:
    """The earliest moment at or before `now` at which anything is due."""
    times = [t for t in _due_times(uow, now) if t is not None]
    return min(times) if times else None


def run_due(new_uow: UowFactory, now: datetime) -> int:
    """Do all work due at or before `now`, in time order; returns how many items were done."""
    done = 0
    while True:
        with replace(new_uow(), read_only=True) as uow:
            times = _due_times(uow, now)
        if all(t is None for t in times):
            return done
        moment = min(t for t in times if t is not None)
        for (find, work, lock), due in zip(_KINDS, times, strict=True):
            # A kind with nothing due at this moment is skipped; if an earlier kind's work makes
            # something of it due now, the next pass (at this same moment) finds it.
            if due is None or due > moment:
                continue
            while True:
                with replace(new_uow(), read_only=True) as uow:
                    ids = find(uow, moment)
                if not ids:
                    break
                size = 1 if lock is None else POST_GROUP
                for start in range(0, len(ids), size):
                    done += _do_group(new_uow, work, lock, ids[start : start + size], moment)
                if len(ids) < BATCH:
                    break  # all of this kind at this moment; more made meanwhile: the next pass


Work = Callable[[UnitOfWork, int, datetime], None]
Lock = Callable[[UnitOfWork, list[int]], None]


def _do_group(
    new_uow: UowFactory, work: Work, lock: Lock | None, items: list[int], moment: datetime
) -> int:
    """Do `items` in one transaction; if that fails, one per transaction (the failing one raises)."""
    try:
        with new_uow() as uow:
            if lock is not None:
                lock(uow, items)
            for item in items:
                work(uow, item, moment)
            uow.commit()
        return len(items)
    except Exception:
        if len(items) == 1:
            raise
        log.warning("a group of %d items failed; doing them one by one", len(items), exc_info=True)
    for item in items:
        with new_uow() as uow:
            work(uow, item, moment)
            uow.commit()
    return len(items)


def _ids(uow: UnitOfWork, query: Any) -> list[int]:
    return [int(i) for i in uow.conn.execute(query.limit(BATCH)).scalars().all()]


def _windows_due(uow: UnitOfWork, moment: datetime) -> list[int]:
    return _ids(
        uow,
        sa.select(members.c.id)
        .where(members.c.env_id == uow.env_id, members.c.window_end <= moment)
        .order_by(members.c.id),
    )


def _roll_window(uow: UnitOfWork, member_id: int, moment: datetime) -> None:
    member = member_by_id(uow, member_id)
    if member.window_end is None or member.window_end > moment:
        return
    boundary = member.window_end
    program = version_at(uow, boundary).program
    if program.tiers.window == "lifetime":  # a version switched to lifetime: no more rolls
        uow.conn.execute(
            sa.update(members).where(members.c.id == member.id).values(window_end=None)
        )
        return
    state = state_of(member)
    change = roll_window(program, state)
    save_state(uow, member.id, state)
    start, end = window_bounds(program, boundary)
    uow.conn.execute(
        sa.update(members)
        .where(members.c.id == member.id)
        .values(window_start=start, window_end=end)
    )
    if change.tier_to is not None:
        assert change.tier_from is not None
        if change.reason == "threshold":
            machine = tier_machine(program)
            machine.check(change.tier_from, NEW_WINDOW, change.tier_to, member.external_id)
        record_tier(uow, member.id, boundary, change.tier_to, "window")
        uow.record(
            Event(
                "tier.changed",
                boundary,
                {"from": change.tier_from, "to": change.tier_to},
                member.id,
            )
        )


def _lots_due(uow: UnitOfWork, moment: datetime) -> list[int]:
    return _ids(
        uow,
        sa.select(lots.c.member_id)
        .where(lots.c.env_id == uow.env_id, lots.c.state == "posted", lots.c.expires_at <= moment)
        .group_by(lots.c.member_id)
        .order_by(lots.c.member_id),
    )


def _expire_lots(uow: UnitOfWork, member_id: int, moment: datetime) -> None:
    member_by_id(uow, member_id)
    rows = uow.conn.execute(
        sa.select(lots.c.id, lots.c.remaining).where(
            lots.c.member_id == member_id, lots.c.state == "posted", lots.c.expires_at <= moment
        )
    ).all()
    program = version_at(uow, moment).program
    points.expire_lots(uow, program, member_id, list(rows), moment, "months_after_earn")


def _inactive_due(uow: UnitOfWork, moment: datetime) -> list[int]:
    return _ids(
        uow,
        sa.select(members.c.id)
        .where(members.c.env_id == uow.env_id, members.c.inactivity_due_at <= moment)
        .order_by(members.c.id),
    )


def _expire_inactive(uow: UnitOfWork, member_id: int, moment: datetime) -> None:
    member = member_by_id(uow, member_id)
    if member.inactivity_due_at is None or member.inactivity_due_at > moment:
        return
    rows = uow.conn.execute(
        sa.select(lots.c.id, lots.c.remaining).where(
            lots.c.member_id == member_id, lots.c.state == "posted", lots.c.remaining > 0
        )
    ).all()
    program = version_at(uow, moment).program
    points.expire_lots(uow, program, member_id, list(rows), moment, "inactivity")
    uow.conn.execute(
        sa.update(members).where(members.c.id == member_id).values(inactivity_due_at=None)
    )


def _rewards_due(uow: UnitOfWork, moment: datetime) -> list[int]:
    return _ids(
        uow,
        sa.select(rewards.c.id)
        .where(
            rewards.c.env_id == uow.env_id,
            rewards.c.state == "available",
            rewards.c.expires_at <= moment,
        )
        .order_by(rewards.c.id),
    )


def _expire_reward(uow: UnitOfWork, reward_id: int, moment: datetime) -> None:
    row = uow.conn.execute(sa.select(rewards).where(rewards.c.id == reward_id)).one()
    member_by_id(uow, row.member_id)
    row = uow.conn.execute(sa.select(rewards).where(rewards.c.id == reward_id)).one()
    if row.state != "available" or row.expires_at > moment:
        return  # used or reserved meanwhile: a reserved reward is honoured at close
    state = REWARD.target(row.state, "valid_days pass", row.alias or row.reward_id)
    uow.conn.execute(sa.update(rewards).where(rewards.c.id == reward_id).values(state=state))
    uow.record(
        Event(
            "reward.expired", moment, {"reward": row.reward_id, "alias": row.alias}, row.member_id
        )
    )


def _holds_due(uow: UnitOfWork, moment: datetime) -> list[int]:
    return _ids(
        uow,
        sa.select(holds.c.id)
        .where(
            holds.c.env_id == uow.env_id, holds.c.state == "pending", holds.c.expires_at <= moment
        )
        .order_by(holds.c.id),
    )


def _postings_due(uow: UnitOfWork, moment: datetime) -> list[int]:
    return _ids(
        uow,
        sa.select(orders_table.c.id)
        .where(
            orders_table.c.env_id == uow.env_id,
            orders_table.c.post_state == "pending",
            orders_table.c.due_at <= moment,
        )
        .order_by(orders_table.c.close_seq),
    )


def _lock_members_of_orders(uow: UnitOfWork, order_pks: list[int]) -> None:
    uow.conn.execute(_LOCK_MEMBERS_OF_ORDERS, {"b_orders": order_pks}).all()


_LOCK_MEMBERS_OF_ORDERS = (
    sa.select(members.c.id)
    .where(
        members.c.id.in_(
            sa.select(orders_table.c.member_id).where(
                orders_table.c.id.in_(sa.bindparam("b_orders", expanding=True))
            )
        )
    )
    .order_by(members.c.id)
    .with_for_update()
)

_KINDS: list[tuple[Callable[[UnitOfWork, datetime], list[int]], Work, Lock | None]] = [
    (_windows_due, _roll_window, None),
    (_lots_due, _expire_lots, None),
    (_inactive_due, _expire_inactive, None),
    (_rewards_due, _expire_reward, None),
    (_holds_due, gift_cards.release_expired, None),
    (_postings_due, orders.post, _lock_members_of_orders),
]
