"""Due work: everything that falls due with time, done in time order (rule 14).

`run_due(now)` repeatedly finds the earliest moment at which anything is due and does,
at that moment and in this order: tier windows, expiries (lots, inactivity, rewards,
holds), postings in close order. Each item is done under its member's lock and re-checks
that it is still due, so running twice changes nothing and a crash between items loses
nothing.

When only postings are due until some later time (the usual case: orders close all day,
expiries come rarely), up to `POST_GROUP` of them are done in one transaction, in due time
and then close order, each at its own due time: one commit (and one WAL flush) for the
group instead of one each, and one look-up of what is due. A group stops taking postings
after `GROUP_BUDGET_S`, since requests for its members wait on its locks until it commits.
The group's members are locked first, in id order, the order in which a transfer locks its
two members, so a group never deadlocks with a request. Before it commits, a group checks
that its own postings did not make other work due before its last posting (a lot expiring,
a reward lapsing); if they did, or if the group fails, only its first posting is done,
alone, so time order holds and a posting that cannot be done holds back only itself and
those after it. The other kinds go one per transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from punchcard.engine.members import roll_window, window_bounds
from punchcard.lifecycle.machines import NEW_WINDOW, REWARD, tier_machine
from punchcard.services import gift_cards, orders, points, programs
from punchcard.services.context import (
    member_by_id,
    record_tier,
    save_state,
    state_of,
    version_at,
    version_by_id,
)
from punchcard.services.uow_factory import UowFactory
from punchcard.store.database import single_statement
from punchcard.store.tables import UtcDateTime, holds, lots, members, program_versions, rewards
from punchcard.store.tables import orders as orders_table
from punchcard.store.uow import Event, UnitOfWork

log = logging.getLogger("punchcard.worker")
BATCH = 200  # items looked up per query
POST_GROUP = 25  # postings per transaction, at most
GROUP_BUDGET_S = 0.02  # and no more than this long: requests wait on a group's locks


def _due_queries(env_id: str, now: datetime) -> list[Any]:
    return [
        sa.select(sa.func.min(program_versions.c.live_from)).where(
            program_versions.c.env_id == env_id,
            program_versions.c.planned.is_(False),
            program_versions.c.live_from <= now,
        ),
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


def _due_times(conn: sa.Connection, env_id: str, now: datetime) -> list[datetime | None]:
    """The earliest due time of each kind (None: nothing due by `now`), in one round trip."""
    queries = _due_queries(env_id, now)
    return list(conn.execute(sa.select(*(q.scalar_subquery() for q in queries))).one())


def next_due(conn: sa.Connection, env_id: str, now: datetime) -> datetime | None:
    """The earliest moment at or before `now` at which anything is due."""
    times = [t for t in _due_times(conn, env_id, now) if t is not None]
    return min(times) if times else None


def run_due(new_uow: UowFactory, now: datetime) -> int:
    """Do all work due at or before `now`, in time order; returns how many items were done."""
    done = 0
    first = new_uow()
    while True:
        with single_statement(first.engine) as conn:
            times = _due_times(conn, first.env_id, now)
        if all(t is None for t in times):
            return done
        moment = min(t for t in times if t is not None)
        others = [t for t in times[:-1] if t is not None]
        if times[-1] == moment and not (others and min(others) <= moment):
            done += _post_group(new_uow, now, min(others) if others else None)
            continue
        for (find, work), due in zip(_kinds(), times, strict=True):
            # A kind with nothing due at this moment is skipped; if an earlier kind's work makes
            # something of it due now, the next pass (at this same moment) finds it.
            if due is None or due > moment:
                continue
            while True:
                with replace(new_uow(), read_only=True) as uow:
                    ids = find(uow, moment)
                if not ids:
                    break
                for item in ids:
                    with new_uow() as uow:
                        work(uow, item, moment)
                        uow.commit()
                    done += 1
                if len(ids) < BATCH:
                    break  # all of this kind at this moment; more made meanwhile: the next pass


class _Overtaken(Exception):
    """A group's own postings made other work due before its last posting's time."""


def _post_group(new_uow: UowFactory, now: datetime, before: datetime | None) -> int:
    """Post up to POST_GROUP orders due before `before` (other work's next due time), each at
    its own due time, in one transaction; returns how many were posted.

    Only postings are due until `before`, so doing them in (due time, close) order is time
    order, unless a posting itself makes other work due before a later posting of the group
    (a lot expiring, a reward's validity ending). The group checks that before it commits;
    if so, or if the group fails, only its first posting is done, alone, and the caller
    looks again. A posting that cannot be done thus holds back only itself and those after it.
    """
    first = new_uow()
    with single_statement(first.engine) as conn:
        due = conn.execute(
            _POSTINGS_DUE if before is None else _POSTINGS_DUE_BEFORE,
            {"b_env": first.env_id, "b_now": now, "b_before": before},
        ).all()
    if not due:
        return 0
    if len(due) > 1:
        try:
            with new_uow() as uow:
                uow.conn.execute(_LOCK_MEMBERS_OF_ORDERS, {"b_orders": [r.id for r in due]}).all()
                ends = time.monotonic() + GROUP_BUDGET_S
                posted = 0
                while posted < len(due) and (posted == 0 or time.monotonic() < ends):
                    orders.post(uow, due[posted].id, due[posted].due_at)
                    posted += 1
                last = due[posted - 1].due_at
                if any(
                    t is not None and t <= last for t in _due_times(uow.conn, uow.env_id, now)[:-1]
                ):
                    raise _Overtaken
                uow.commit()
            return posted
        except _Overtaken:
            pass
        except Exception:
            log.warning(
                "a group of %d postings failed; doing the first alone", len(due), exc_info=True
            )
    with new_uow() as uow:
        orders.post(uow, due[0].id, due[0].due_at)
        uow.commit()
    return 1


def _ids(uow: UnitOfWork, query: Any) -> list[int]:
    return [int(i) for i in uow.conn.execute(query.limit(BATCH)).scalars().all()]


def _versions_due(uow: UnitOfWork, moment: datetime) -> list[int]:
    return _ids(
        uow,
        sa.select(program_versions.c.id)
        .where(
            program_versions.c.env_id == uow.env_id,
            program_versions.c.planned.is_(False),
            program_versions.c.live_from <= moment,
        )
        .order_by(program_versions.c.version),
    )


def _go_live(uow: UnitOfWork, version_id: int, moment: datetime) -> None:
    """A version live from `moment` (uploaded or activated for later) goes live: first at
    that moment, so what falls due then follows it (once: go_live checks)."""
    programs.go_live(uow, version_id, version_by_id(uow, version_id).program, moment)


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


def _inactive_due(uow: UnitOfWork, moment: datetime) -> list[int]:
    return _ids(
        uow,
        sa.select(members.c.id)
        .where(members.c.env_id == uow.env_id, members.c.inactivity_due_at <= moment)
        .order_by(members.c.id),
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
    # Everything due by `moment` is due at it (it is the earliest), so this is close order.
    rows = uow.conn.execute(_POSTINGS_DUE.limit(BATCH), {"b_env": uow.env_id, "b_now": moment})
    return [int(row.id) for row in rows]


_POSTINGS_DUE = (
    sa.select(orders_table.c.id, orders_table.c.due_at)
    .where(
        orders_table.c.env_id == sa.bindparam("b_env"),
        orders_table.c.post_state == "pending",
        orders_table.c.due_at <= sa.bindparam("b_now", type_=UtcDateTime),
    )
    .order_by(orders_table.c.due_at, orders_table.c.close_seq)
    .limit(POST_GROUP)
)
_POSTINGS_DUE_BEFORE = _POSTINGS_DUE.where(
    orders_table.c.due_at < sa.bindparam("b_before", type_=UtcDateTime)
)
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


def _kinds() -> list[
    tuple[Callable[[UnitOfWork, datetime], list[int]], Callable[[UnitOfWork, int, datetime], None]]
]:
    """Each kind of due work, in the order rule 14 does them at one moment. Looked up when
    used: the services that call `catch_up` are imported by this module."""
    return [
        (_versions_due, _go_live),
        (_windows_due, _roll_window),
        (_lots_due, points.expire_due_lots),
        (_inactive_due, points.expire_inactive),
        (_rewards_due, _expire_reward),
        (_holds_due, gift_cards.release_expired),
        (_postings_due, orders.post),
    ]


_B_MEMBER: sa.BindParameter[int] = sa.bindparam("b_member", type_=sa.Integer)
_B_NOW = sa.bindparam("b_now", type_=UtcDateTime)
_MEMBER_DUE = sa.select(  # one member's earliest due time of each kind, in one round trip
    sa.select(members.c.window_end)
    .where(members.c.id == _B_MEMBER, members.c.window_end <= _B_NOW)
    .scalar_subquery(),
    sa.select(sa.func.min(lots.c.expires_at))
    .where(lots.c.member_id == _B_MEMBER, lots.c.state == "posted", lots.c.expires_at <= _B_NOW)
    .scalar_subquery(),
    sa.select(members.c.inactivity_due_at)
    .where(members.c.id == _B_MEMBER, members.c.inactivity_due_at <= _B_NOW)
    .scalar_subquery(),
    sa.select(sa.func.min(rewards.c.expires_at))
    .where(
        rewards.c.member_id == _B_MEMBER,
        rewards.c.state == "available",
        rewards.c.expires_at <= _B_NOW,
    )
    .scalar_subquery(),
    sa.select(sa.func.min(orders_table.c.due_at))
    .where(
        orders_table.c.member_id == _B_MEMBER,
        orders_table.c.post_state == "pending",
        orders_table.c.due_at <= _B_NOW,
    )
    .scalar_subquery(),
)
_B_AT = sa.bindparam("b_at", type_=UtcDateTime)
_MEMBER_REWARDS_LAPSING = (
    sa.select(rewards.c.id)
    .where(
        rewards.c.member_id == _B_MEMBER,
        rewards.c.state == "available",
        rewards.c.expires_at == _B_AT,
    )
    .order_by(rewards.c.id)
)
_MEMBER_POSTINGS_DUE = (
    sa.select(orders_table.c.id)
    .where(
        orders_table.c.member_id == _B_MEMBER,
        orders_table.c.post_state == "pending",
        orders_table.c.due_at == _B_AT,
    )
    .order_by(orders_table.c.close_seq)
)


def catch_up(uow: UnitOfWork, member_id: int, now: datetime) -> bool:
    """Rule 14 for one member, before a request changes it: the member's work due at or
    before `now` (its tier window, its lots and inactive balance expiring, its rewards
    lapsing, its orders posting) is done first, in time order, even when the worker is
    behind; the worker then finds it done. The caller holds the member's lock. True when
    anything was done (the member's row changed: read it again). A gift card hold belongs
    to no member: it is refused from its expiry on instead (gift_cards). A version going
    live is the worker's to apply (one that re-plans does every member at once).

    Work that fails is undone to a savepoint and left to the worker, which retries it
    alone: a posting that can not be done must not fail every request of its member."""
    times = uow.conn.execute(_MEMBER_DUE, {"b_member": member_id, "b_now": now}).one()
    if all(t is None for t in times):
        return False  # the usual case: one look-up, no savepoint
    recorded, later = len(uow.events), dict(uow.ledger_later)
    try:
        with uow.conn.begin_nested():
            _catch_up_from(uow, member_id, now, times)
    except sa.exc.OperationalError:
        raise  # the database itself: the request fails as any would
    except Exception:
        log.exception("a member's due work failed in a request; the worker will retry it")
        del uow.events[recorded:]  # undone with the savepoint: no event of it goes out
        uow.ledger_later.clear()  # nor any move of a system account it left for the commit
        uow.ledger_later.update(later)
        uow.memo.clear()  # nothing read inside it may be trusted either
        return False
    return True


def _catch_up_from(uow: UnitOfWork, member_id: int, now: datetime, times: Any) -> None:
    while True:
        if all(t is None for t in times):
            return
        moment = min(t for t in times if t is not None)
        window, lot, inactive, reward, posting = times
        if window == moment:
            _roll_window(uow, member_id, moment)
        if lot == moment:
            points.expire_due_lots(uow, member_id, moment)
        if inactive == moment:
            points.expire_inactive(uow, member_id, moment)
        found = {"b_member": member_id, "b_at": moment}
        if reward == moment:
            for reward_id in uow.conn.execute(_MEMBER_REWARDS_LAPSING, found).scalars().all():
                _expire_reward(uow, reward_id, moment)
        if posting == moment:
            for order_id in uow.conn.execute(_MEMBER_POSTINGS_DUE, found).scalars().all():
                orders.post(uow, order_id, moment)
        times = uow.conn.execute(_MEMBER_DUE, {"b_member": member_id, "b_now": now}).one()
