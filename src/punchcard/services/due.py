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
alone, so time order holds. The other kinds go one per transaction.

An item that fails (a posting the database refuses, a bug) is set aside in `due_failures`
until its next try, by the wall clock, after a pause that doubles with each failure
(`retry_after`), and logged by name. Its member's later work waits with it, so that member's
work stays in time order; every other member's goes on (a hold holds back only itself; a
version going live, which re-plans every member, holds back everything from its time on).
When its time comes it is tried again at the moment it was due, first, as the earliest
work; done, its row goes. `punchcard audit` lists what is set aside.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
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
from punchcard.store.tables import (
    UtcDateTime,
    due_failures,
    holds,
    lots,
    members,
    program_versions,
    rewards,
)
from punchcard.store.tables import orders as orders_table
from punchcard.store.uow import Event, UnitOfWork

log = logging.getLogger("punchcard.worker")
BATCH = 200  # items looked up per query
POST_GROUP = 25  # postings per transaction, at most
GROUP_BUDGET_S = 0.02  # and no more than this long: requests wait on a group's locks
RETRY_FIRST = timedelta(seconds=10)  # the pause after an item's first failure, doubling
RETRY_MAX = timedelta(hours=1)  # up to this
_TICK = timedelta(microseconds=1)  # the databases' resolution: just before a moment


def retry_after(failures: int) -> timedelta:
    """How long an item that failed `failures` times waits for its next try."""
    return min(RETRY_FIRST * (1 << min(failures - 1, 20)), RETRY_MAX)


@dataclass
class SetAside:
    """An environment's due work set aside after failing, waiting for its next try: the members
    whose work waits, the holds, and the earliest time of a version going live (everything
    from then on waits: it re-plans every member). `retrying`: some item's next try has come,
    so its row goes once this run has done (or set aside again) what was due by then."""

    members: set[int] = field(default_factory=set)
    holds: set[int] = field(default_factory=set)
    horizon: datetime | None = None
    retrying: bool = False

    def limit(self, now: datetime) -> datetime:
        """How far due work may go: `now`, or just before a version set aside."""
        return now if self.horizon is None or self.horizon > now else self.horizon - _TICK

    def free(self, column: sa.ColumnElement[int], kind: str = "member") -> list[Any]:
        """A condition leaving out what is set aside (none when nothing is: the usual case)."""
        ids = self.holds if kind == "hold" else self.members
        return [column.not_in(sorted(ids))] if ids else []


NOTHING_SET_ASIDE = SetAside()


def _due_queries(env_id: str, now: datetime, aside: SetAside = NOTHING_SET_ASIDE) -> list[Any]:
    return [
        sa.select(sa.func.min(program_versions.c.live_from)).where(
            program_versions.c.env_id == env_id,
            program_versions.c.planned.is_(False),
            program_versions.c.live_from <= now,
        ),
        sa.select(sa.func.min(members.c.window_end)).where(
            members.c.env_id == env_id, members.c.window_end <= now, *aside.free(members.c.id)
        ),
        sa.select(sa.func.min(lots.c.expires_at)).where(
            lots.c.env_id == env_id,
            lots.c.state == "posted",
            lots.c.expires_at <= now,
            *aside.free(lots.c.member_id),
        ),
        sa.select(sa.func.min(members.c.inactivity_due_at)).where(
            members.c.env_id == env_id,
            members.c.inactivity_due_at <= now,
            *aside.free(members.c.id),
        ),
        sa.select(sa.func.min(rewards.c.expires_at)).where(
            rewards.c.env_id == env_id,
            rewards.c.state == "available",
            rewards.c.expires_at <= now,
            *aside.free(rewards.c.member_id),
        ),
        sa.select(sa.func.min(holds.c.expires_at)).where(
            holds.c.env_id == env_id,
            holds.c.state == "pending",
            holds.c.expires_at <= now,
            *aside.free(holds.c.id, "hold"),
        ),
        sa.select(sa.func.min(orders_table.c.due_at)).where(
            orders_table.c.env_id == env_id,
            orders_table.c.post_state == "pending",
            orders_table.c.due_at <= now,
            *aside.free(orders_table.c.member_id),
        ),
    ]


def _due_times(
    conn: sa.Connection, env_id: str, now: datetime, aside: SetAside = NOTHING_SET_ASIDE
) -> list[datetime | None]:
    """The earliest due time of each kind (None: nothing due by `now`), in one round trip."""
    queries = _due_queries(env_id, now, aside)
    return list(conn.execute(sa.select(*(q.scalar_subquery() for q in queries))).one())


def next_due(conn: sa.Connection, env_id: str, now: datetime) -> datetime | None:
    """The earliest moment at or before `now` at which anything is due."""
    times = [t for t in _due_times(conn, env_id, now) if t is not None]
    return min(times) if times else None


def has_due_work(env_id: sa.ColumnElement[str], now: Any, wall: datetime) -> sa.ColumnElement[bool]:
    """A condition on an environment (`env_id`, its time `now`): something `run_due` would do
    is due, or a set-aside item's next try has come by `wall`. So a worker can find the
    environments with work in one read and write nothing when none has any. Work of a member
    (or hold) waiting for its next try is left out, as `run_due` leaves it; a version set
    aside is not, so its environment is looked at each round until it goes live."""

    def free(member: sa.Column[Any], kind: str | None = None) -> sa.ColumnElement[bool]:
        waiting = sa.select(due_failures.c.id).where(
            due_failures.c.env_id == member.table.c.env_id,  # correlated with the item's row
            (due_failures.c.item_id if kind else due_failures.c.member_id) == member,
            due_failures.c.next_try_at > wall,
            *([due_failures.c.kind == kind] if kind else []),
        )
        return ~waiting.exists()

    def due(table: sa.Table, at: sa.ColumnElement[Any], *where: Any) -> sa.ColumnElement[bool]:
        # The earliest time, then compared: an index scan in time order that stops at its
        # first row. (`EXISTS ... WHERE at <= now`, its comparison taken from the outer row,
        # was planned as a sequential scan: 0.8 s a round with a million lots.)
        first: sa.ScalarSelect[Any] = (
            sa.select(at)
            .where(table.c.env_id == env_id, at.is_not(None), *where)
            .order_by(at)
            .limit(1)
            .scalar_subquery()
        )
        comes: sa.ColumnElement[bool] = first <= now
        return comes

    return sa.or_(
        due(program_versions, program_versions.c.live_from, program_versions.c.planned.is_(False)),
        due(members, members.c.window_end, free(members.c.id)),
        due(members, members.c.inactivity_due_at, free(members.c.id)),
        due(lots, lots.c.expires_at, lots.c.state == "posted", free(lots.c.member_id)),
        due(
            rewards, rewards.c.expires_at, rewards.c.state == "available", free(rewards.c.member_id)
        ),
        due(holds, holds.c.expires_at, holds.c.state == "pending", free(holds.c.id, "hold")),
        due(
            orders_table,
            orders_table.c.due_at,
            orders_table.c.post_state == "pending",
            free(orders_table.c.member_id),
        ),
        sa.select(due_failures.c.id)
        .where(due_failures.c.env_id == env_id, due_failures.c.next_try_at <= wall)
        .exists(),
    )


def run_due(new_uow: UowFactory, now: datetime, wall: datetime | None = None) -> int:
    """Do all work due at or before `now`, in time order; returns how many items were done.

    An item that fails is set aside until `wall` (the wall clock; in process, `now`) passes
    its next try, with its member's later work; the rest goes on."""
    wall = now if wall is None else wall
    first = new_uow()
    aside = _set_aside(new_uow, wall)
    done = 0
    while True:
        limit = aside.limit(now)
        with single_statement(first.engine) as conn:
            times = _due_times(conn, first.env_id, limit, aside)
        if all(t is None for t in times):
            break
        moment = min(t for t in times if t is not None)
        others = [t for t in times[:-1] if t is not None]
        if times[-1] == moment and not (others and min(others) <= moment):
            done += _post_group(new_uow, limit, min(others) if others else None, aside, wall)
            continue
        for (kind, find, work), due in zip(_kinds(), times, strict=True):
            # A kind with nothing due at this moment is skipped; if an earlier kind's work makes
            # something of it due now, the next pass (at this same moment) finds it.
            if due is None or due > moment:
                continue
            finished, count = _do_kind(new_uow, kind, find, work, moment, aside, wall)
            done += count
            if not finished:
                break  # a version set aside: nothing from its time on, so look again
    if aside.retrying:
        _forget_retried(new_uow, wall, aside.limit(now))
    return done


def _do_kind(
    new_uow: UowFactory,
    kind: str,
    find: Callable[[UnitOfWork, datetime, SetAside], Found],
    work: Callable[[UnitOfWork, int, datetime], None],
    moment: datetime,
    aside: SetAside,
    wall: datetime,
) -> tuple[bool, int]:
    """Every item of one kind due at `moment`, each in its own transaction; an item that fails
    is set aside. Returns whether it went on to the end (not when a version was set aside),
    and how many items were done."""
    done = 0
    while True:
        with replace(new_uow(), read_only=True) as uow:
            found = find(uow, moment, aside)
        if not found:
            return True, done
        for item, member in found:
            if member is not None and member in aside.members:
                continue  # another of its member's items failed just now: it waits with it
            try:
                with new_uow() as uow:
                    work(uow, item, moment)
                    uow.commit()
            except sa.exc.OperationalError:
                raise  # the database itself (a lost deadlock, a restart): the round fails
            except Exception as exc:
                _record_failure(new_uow, kind, item, member, moment, wall, exc, aside)
                if kind == "version":
                    return False, done
                continue
            done += 1
        if len(found) < BATCH:
            return True, done  # all of this kind at this moment; more made meanwhile: next pass


class _Overtaken(Exception):
    """A group's own postings made other work due before its last posting's time."""


def _post_group(
    new_uow: UowFactory, now: datetime, before: datetime | None, aside: SetAside, wall: datetime
) -> int:
    """Post up to POST_GROUP orders due before `before` (other work's next due time), each at
    its own due time, in one transaction; returns how many were posted.

    Only postings are due until `before`, so doing them in (due time, close) order is time
    order, unless a posting itself makes other work due before a later posting of the group
    (a lot expiring, a reward's validity ending). The group checks that before it commits;
    if so, or if the group fails, only its first posting is done, alone, and the caller
    looks again. A first posting that fails alone is set aside with its member's later work.
    """
    first = new_uow()
    query = _POSTINGS_DUE if before is None else _POSTINGS_DUE_BEFORE
    with single_statement(first.engine) as conn:
        due = conn.execute(
            query.where(*aside.free(orders_table.c.member_id)),
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
                    t is not None and t <= last
                    for t in _due_times(uow.conn, uow.env_id, now, aside)[:-1]
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
    try:
        with new_uow() as uow:
            orders.post(uow, due[0].id, due[0].due_at)
            uow.commit()
    except sa.exc.OperationalError:
        raise
    except Exception as exc:
        _record_failure(
            new_uow, "posting", due[0].id, due[0].member_id, due[0].due_at, wall, exc, aside
        )
        return 0
    return 1


_ASIDE = sa.select(due_failures).where(due_failures.c.env_id == sa.bindparam("b_env"))


def _set_aside(new_uow: UowFactory, wall: datetime) -> SetAside:
    """What of the environment's due work waits for its next try (one look-up; a row whose
    item is no longer due, done by a request's catch-up or voided meanwhile, goes)."""
    first = new_uow()
    with single_statement(first.engine) as conn:
        rows = conn.execute(_ASIDE, {"b_env": first.env_id}).all()
    aside = SetAside()
    if not rows:
        return aside  # the usual case
    with new_uow() as uow:
        for row in rows:
            if not still_due(uow.conn, row):
                uow.conn.execute(sa.delete(due_failures).where(due_failures.c.id == row.id))
            elif row.next_try_at <= wall:
                aside.retrying = True  # tried again in this run, as the earliest work
            elif row.kind == "version":
                aside.horizon = min(row.due_at, aside.horizon or row.due_at)
            elif row.kind == "hold":
                aside.holds.add(row.item_id)
            else:
                aside.members.add(row.member_id)
        uow.commit()
    return aside


def _record_failure(
    new_uow: UowFactory,
    kind: str,
    item: int,
    member: int | None,
    moment: datetime,
    wall: datetime,
    exc: Exception,
    aside: SetAside,
) -> None:
    """Set a failed item aside until its next try, and log it by name; its member's later work
    waits with it (a version's: everything from its time on)."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    first_line = (str(cause).splitlines() or [""])[0]
    error = f"{type(cause).__name__}: {first_line}".replace("\x00", "")[:500]
    with new_uow() as uow:
        key = (
            due_failures.c.env_id == uow.env_id,
            due_failures.c.kind == kind,
            due_failures.c.item_id == item,
        )
        before = uow.conn.execute(sa.select(due_failures.c.failures).where(*key)).scalar()
        failures = 1 if before is None else before + 1
        next_try = wall + retry_after(failures)
        values = {"due_at": moment, "failures": failures, "next_try_at": next_try, "error": error}
        if before is None:
            uow.conn.execute(
                sa.insert(due_failures).values(
                    env_id=uow.env_id,
                    kind=kind,
                    item_id=item,
                    member_id=member,
                    first_failed_at=wall,
                    **values,
                )
            )
        else:
            uow.conn.execute(sa.update(due_failures).where(*key).values(**values))
        what = describe(uow.conn, kind, item, member)
        uow.commit()
    log.warning(
        "due work failed: the %s in environment %s, due at %s (failure %d); set aside until"
        " %s, the rest goes on",
        what,
        uow.env_id,
        moment.astimezone(UTC).isoformat(),
        failures,
        next_try.astimezone(UTC).isoformat(),
        exc_info=exc,
    )
    if kind == "version":
        aside.horizon = min(moment, aside.horizon or moment)
    elif kind == "hold":
        aside.holds.add(item)
    elif member is not None:
        aside.members.add(member)


def _forget_retried(new_uow: UowFactory, wall: datetime, limit: datetime) -> None:
    """The rows of items whose next try came in this run and that did not fail again: the run
    did all that was due up to `limit`, so an item due by then is done."""
    with new_uow() as uow:
        uow.conn.execute(
            sa.delete(due_failures).where(
                due_failures.c.env_id == uow.env_id,
                due_failures.c.next_try_at <= wall,
                due_failures.c.due_at <= limit,
            )
        )
        uow.commit()


def _named(kind: str, item: int) -> Any:
    """The query of the name a due item's caller knows it by, if it has one of its own."""
    if kind == "version":
        return sa.select(program_versions.c.version).where(program_versions.c.id == item)
    if kind == "reward":
        alias = sa.func.coalesce(rewards.c.alias, rewards.c.reward_id)
        return sa.select(alias).where(rewards.c.id == item)
    if kind == "hold":
        return sa.select(holds.c.external_id).where(holds.c.id == item)
    if kind == "posting":
        return sa.select(orders_table.c.external_id).where(orders_table.c.id == item)
    return None


_KIND_NAMES = {
    "version": "version {} going live",
    "window": "tier window roll",
    "lots": "expiry of lots",
    "inactivity": "expiry of an inactive balance",
    "reward": "lapse of reward {!r}",
    "hold": "release of hold {!r}",
    "posting": "posting of order {!r}",
}


def describe(conn: sa.Connection, kind: str, item: int, member: int | None) -> str:
    """A due item by the names its environment knows it by (an order's id, a member's)."""
    query = _named(kind, item)
    what = _KIND_NAMES[kind].format(None if query is None else conn.execute(query).scalar())
    if member is None:
        return what
    who = conn.execute(sa.select(members.c.external_id).where(members.c.id == member)).scalar()
    return f"{what} of member {who!r}"


def still_due(conn: sa.Connection, row: Any) -> bool:
    """Whether a set-aside item is still due at the moment it failed (not done meanwhile by its
    member's requests, nor voided, used or resolved)."""
    at = row.due_at
    if row.kind == "version":
        query: Any = sa.select(program_versions.c.id).where(
            program_versions.c.id == row.item_id,
            program_versions.c.planned.is_(False),
            program_versions.c.live_from <= at,
        )
    elif row.kind == "window":
        query = sa.select(members.c.id).where(
            members.c.id == row.item_id, members.c.window_end <= at
        )
    elif row.kind == "lots":
        query = sa.select(lots.c.id).where(
            lots.c.member_id == row.item_id, lots.c.state == "posted", lots.c.expires_at <= at
        )
    elif row.kind == "inactivity":
        query = sa.select(members.c.id).where(
            members.c.id == row.item_id, members.c.inactivity_due_at <= at
        )
    elif row.kind == "reward":
        query = sa.select(rewards.c.id).where(
            rewards.c.id == row.item_id, rewards.c.state == "available", rewards.c.expires_at <= at
        )
    elif row.kind == "hold":
        query = sa.select(holds.c.id).where(
            holds.c.id == row.item_id, holds.c.state == "pending", holds.c.expires_at <= at
        )
    else:
        query = sa.select(orders_table.c.id).where(
            orders_table.c.id == row.item_id,
            orders_table.c.post_state == "pending",
            orders_table.c.due_at <= at,
        )
    return conn.execute(query.limit(1)).first() is not None


Found = list[tuple[int, int | None]]  # due items: (the item, the member it belongs to)


def _ids(uow: UnitOfWork, query: Any) -> Found:
    """Items whose own id is their member's (or with none), or (item, member) rows."""
    rows = uow.conn.execute(query.limit(BATCH)).all()
    return [(int(r[0]), None if r[-1] is None else int(r[-1])) for r in rows]


def _versions_due(uow: UnitOfWork, moment: datetime, _aside: SetAside) -> Found:
    return _ids(
        uow,
        sa.select(program_versions.c.id, sa.null())
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


def _windows_due(uow: UnitOfWork, moment: datetime, aside: SetAside) -> Found:
    return _ids(
        uow,
        sa.select(members.c.id)
        .where(
            members.c.env_id == uow.env_id,
            members.c.window_end <= moment,
            *aside.free(members.c.id),
        )
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


def _lots_due(uow: UnitOfWork, moment: datetime, aside: SetAside) -> Found:
    return _ids(
        uow,
        sa.select(lots.c.member_id)
        .where(
            lots.c.env_id == uow.env_id,
            lots.c.state == "posted",
            lots.c.expires_at <= moment,
            *aside.free(lots.c.member_id),
        )
        .group_by(lots.c.member_id)
        .order_by(lots.c.member_id),
    )


def _inactive_due(uow: UnitOfWork, moment: datetime, aside: SetAside) -> Found:
    return _ids(
        uow,
        sa.select(members.c.id)
        .where(
            members.c.env_id == uow.env_id,
            members.c.inactivity_due_at <= moment,
            *aside.free(members.c.id),
        )
        .order_by(members.c.id),
    )


def _rewards_due(uow: UnitOfWork, moment: datetime, aside: SetAside) -> Found:
    return _ids(
        uow,
        sa.select(rewards.c.id, rewards.c.member_id)
        .where(
            rewards.c.env_id == uow.env_id,
            rewards.c.state == "available",
            rewards.c.expires_at <= moment,
            *aside.free(rewards.c.member_id),
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


def _holds_due(uow: UnitOfWork, moment: datetime, aside: SetAside) -> Found:
    return _ids(
        uow,
        sa.select(holds.c.id, sa.null())
        .where(
            holds.c.env_id == uow.env_id,
            holds.c.state == "pending",
            holds.c.expires_at <= moment,
            *aside.free(holds.c.id, "hold"),
        )
        .order_by(holds.c.id),
    )


def _postings_due(uow: UnitOfWork, moment: datetime, aside: SetAside) -> Found:
    # Everything due by `moment` is due at it (it is the earliest), so this is close order.
    rows = uow.conn.execute(
        _POSTINGS_DUE.limit(BATCH).where(*aside.free(orders_table.c.member_id)),
        {"b_env": uow.env_id, "b_now": moment},
    )
    return [(int(row.id), int(row.member_id)) for row in rows]


_POSTINGS_DUE = (
    sa.select(orders_table.c.id, orders_table.c.due_at, orders_table.c.member_id)
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
    tuple[
        str,
        Callable[[UnitOfWork, datetime, SetAside], Found],
        Callable[[UnitOfWork, int, datetime], None],
    ]
]:
    """Each kind of due work, named as `due_failures.kind`, in the order rule 14 does them at
    one moment. Looked up when used: the services that call `catch_up` are imported by this
    module."""
    return [
        ("version", _versions_due, _go_live),
        ("window", _windows_due, _roll_window),
        ("lots", _lots_due, points.expire_due_lots),
        ("inactivity", _inactive_due, points.expire_inactive),
        ("reward", _rewards_due, _expire_reward),
        ("hold", _holds_due, gift_cards.release_expired),
        ("posting", _postings_due, orders.post),
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
_EARLIEST = sa.union_all(
    sa.select(sa.func.min(lots.c.expires_at).label("at")).where(
        lots.c.member_id == _B_MEMBER, lots.c.state == "posted"
    ),
    sa.select(sa.func.min(rewards.c.expires_at)).where(
        rewards.c.member_id == _B_MEMBER, rewards.c.state == "available"
    ),
    sa.select(sa.func.min(orders_table.c.due_at)).where(
        orders_table.c.member_id == _B_MEMBER, orders_table.c.post_state == "pending"
    ),
).subquery()
_PLAN_NEXT = (
    sa.update(members)
    .where(members.c.id == _B_MEMBER)
    .values(next_due_at=sa.select(sa.func.min(_EARLIEST.c.at)).scalar_subquery())
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


def catch_up(uow: UnitOfWork, member_id: int, now: datetime, *, row: Any = None) -> bool:
    """Rule 14 for one member, before a request changes it: the member's work due at or
    before `now` (its tier window, its lots and inactive balance expiring, its rewards
    lapsing, its orders posting) is done first, in time order, even when the worker is
    behind; the worker then finds it done. The caller holds the member's lock. True when
    anything was done (the member's row changed: read it again). A gift card hold belongs
    to no member: it is refused from its expiry on instead (gift_cards). A version going
    live is the worker's to apply (one that re-plans does every member at once).

    `row`, the member's row read with its lock, says whether anything can be due: its window's
    end, its inactivity expiry and `next_due_at` (a lower bound on the rest) all after `now`
    is the usual case, and then nothing more is read. When the bound has passed, it is
    computed again once the work is done (True then, even if no work was: the row changed).

    Work that fails is undone to a savepoint and left to the worker, which retries it
    alone: a posting that can not be done must not fail every request of its member."""
    if row is not None and not may_be_due(row, now):
        return False  # the usual case: nothing read, nothing written
    times = uow.conn.execute(_MEMBER_DUE, {"b_member": member_id, "b_now": now}).one()
    if all(t is None for t in times):
        _plan_next(uow, member_id)  # the bound was early (the worker did the work): set it
        return row is not None
    recorded = len(uow.events)
    try:
        with uow.conn.begin_nested():
            _catch_up_from(uow, member_id, now, times)
    except sa.exc.OperationalError:
        raise  # the database itself: the request fails as any would
    except Exception:
        log.exception("a member's due work failed in a request; the worker will retry it")
        del uow.events[recorded:]  # undone with the savepoint: no event of it goes out
        uow.memo.clear()  # nothing read inside it may be trusted either
        return False
    _plan_next(uow, member_id)
    return True


def may_be_due(row: Any, now: datetime) -> bool:
    """Whether the member's row (read with its lock) allows work due at or before `now`: after
    `catch_up`, only work that failed and waits for the worker."""
    times = (row.window_end, row.inactivity_due_at, row.next_due_at)
    return any(t is not None and t <= now for t in times)


def _plan_next(uow: UnitOfWork, member_id: int) -> None:
    """Set the member's `next_due_at` to its earliest lot expiry, reward lapse or posting."""
    uow.conn.execute(_PLAN_NEXT, {"b_member": member_id})


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
