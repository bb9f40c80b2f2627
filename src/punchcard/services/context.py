"""What every use case needs: the program version live at a time, members and their tier history."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from punchcard.engine.members import MemberState
from punchcard.engine.programs import Program, parse_program
from punchcard.errors import NotFound
from punchcard.services import caches
from punchcard.store import hot
from punchcard.store.tables import (
    UtcDateTime,
    environments,
    members,
    program_versions,
    tier_changes,
)
from punchcard.store.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class Version:
    id: int
    number: int
    program: Program


@lru_cache(maxsize=256)
def _parsed(source: str) -> Program:
    # Versions are immutable, so one parse serves every evaluation under them.
    return parse_program(source)


# Hot-path statements are built once (SQLAlchemy then reuses their compiled form cheaply).
_LIVE_FROM = program_versions.c.live_from
_LIVE_BY = program_versions.c.live_from <= sa.bindparam("b_at", type_=_LIVE_FROM.type)
_NEXT_LIVE_FROM = (
    sa.select(sa.func.min(_LIVE_FROM))
    .where(
        program_versions.c.env_id == sa.bindparam("b_env"),
        sa.bindparam("b_at", type_=_LIVE_FROM.type) < _LIVE_FROM,
    )
    .scalar_subquery()
)
_VERSION_AT = (
    sa.select(
        program_versions.c.id,
        program_versions.c.version,
        program_versions.c.source,
        _LIVE_FROM,
        _NEXT_LIVE_FROM.label("next_live_from"),
        # Only a live environment's spans are kept in the process cache.
        sa.select(environments.c.kind)
        .where(environments.c.id == sa.bindparam("b_env"))
        .scalar_subquery()
        .label("env_kind"),
    )
    .where(program_versions.c.env_id == sa.bindparam("b_env"), _LIVE_FROM.is_not(None))
    # One round trip: the latest live by `at`, else (an order from before) the earliest.
    .order_by(
        sa.case((_LIVE_BY, 0), else_=1),
        sa.case((_LIVE_BY, _LIVE_FROM)).desc(),
        _LIVE_FROM,
        program_versions.c.version.desc(),
    )
    .limit(1)
)
_VERSION_BY_ID = sa.select(program_versions.c.version, program_versions.c.source).where(
    program_versions.c.id == sa.bindparam("b_id")
)
_CHANGED_BY = tier_changes.c.at <= sa.bindparam("b_at", type_=tier_changes.c.at.type)


def _tier_then(member_id: Any) -> Any:
    """The member's tier at `b_at`, in one round trip: the latest change by `b_at`, else (an
    order placed before the member enrolled) the first change."""
    return (
        sa.select(tier_changes.c.tier)
        .where(tier_changes.c.member_id == member_id)
        .order_by(
            sa.case((_CHANGED_BY, 0), else_=1),
            sa.case((_CHANGED_BY, tier_changes.c.at)).desc(),
            sa.case((_CHANGED_BY, -tier_changes.c.id), else_=tier_changes.c.id),
        )
        .limit(1)
    )


_TIER_AT = _tier_then(sa.bindparam("b_member"))
_MEMBER_BY_REF = sa.select(members).where(
    members.c.env_id == sa.bindparam("b_env"),
    members.c.external_id == sa.bindparam("b_ref"),
)
_LOCK_MEMBER_BY_REF = _MEMBER_BY_REF.with_for_update()
# A version going live at or before now that the worker has not applied yet (it re-plans
# members): an order closing now must not post before it.
VERSION_DUE = (
    sa.exists()
    .where(
        program_versions.c.env_id == members.c.env_id,
        program_versions.c.planned.is_(False),
        program_versions.c.live_from <= sa.bindparam("b_now", type_=UtcDateTime),
    )
    .label("version_due")
)
_LOCK_MEMBER_WITH_TIER = (
    sa.select(members, _tier_then(members.c.id).scalar_subquery().label("tier_then"), VERSION_DUE)
    .where(
        members.c.env_id == sa.bindparam("b_env"),
        members.c.external_id == sa.bindparam("b_ref"),
    )
    .with_for_update(of=members)
)
_LOCK_MEMBER_BY_ID = (
    sa.select(members).where(members.c.id == sa.bindparam("b_id")).with_for_update()
)
_SAVE_STATE = sa.update(members).where(members.c.id == sa.bindparam("b_id"))
_INSERT_TIER = sa.insert(tier_changes)  # built once: its values are the parameters
_B_DUE = sa.bindparam("b_due", type_=UtcDateTime)
_LOWERED = sa.case(  # next_due_at, lowered to b_due (never raised): a lower bound stays one
    (sa.or_(members.c.next_due_at.is_(None), members.c.next_due_at > _B_DUE), _B_DUE),
    else_=members.c.next_due_at,
)
_SAVE_STATE_DUE = _SAVE_STATE.values(next_due_at=_LOWERED)
_DUE_BY = (
    sa.update(members).where(members.c.id == sa.bindparam("b_id")).values(next_due_at=_LOWERED)
)


_EVER = datetime(1, 1, 1, tzinfo=UTC)  # before any time an order can carry


def version_at(uow: UnitOfWork, at: datetime) -> Version:
    """The version live at `at` (before the first version: the first one).

    A transaction remembers the span its answer holds for (until the next version goes
    live), so a group of postings at nearby times reads it once; a live environment's spans
    are kept in the process cache too (services/caches.py), so most transactions read none."""
    live = uow.memo.get("live")
    if live is not None and live[0] <= at and (live[1] is None or at < live[1]):
        return live[2]  # type: ignore[no-any-return]
    cache = caches.reading(uow.conn)
    if cache is not None:
        found = cache.version_at(uow.env_id, at)
        if found is not None:
            uow.memo[("version", found.id)] = found  # `version_by_id` reads it from here
            return found
        generation = cache.generation  # read before the row: a drop after it wins
    row = uow.conn.execute(_VERSION_AT, {"b_env": uow.env_id, "b_at": at}).first()
    if row is None:
        raise NotFound("no program version is live in this environment")
    version = Version(row.id, row.version, _parsed(row.source))
    uow.memo[("version", row.id)] = version
    # Its span: from its live_from to the next one's; before the first version, the first
    # one answers for every time before it goes live (orders dated before the program).
    start, end = (
        (row.live_from, row.next_live_from) if row.live_from <= at else (_EVER, row.live_from)
    )
    uow.memo["live"] = (start, end, version)
    # A read-only transaction on SQLite reads a snapshot that may predate the last
    # change (its first read fixed it), so what it read is not kept.
    snapshot = uow.read_only and uow.conn.dialect.name == "sqlite"
    if cache is not None and row.env_kind == "live" and not snapshot:
        cache.keep_span(uow.env_id, start, end, version, generation)
    return version


def version_by_id(uow: UnitOfWork, version_id: int) -> Version:
    key = ("version", version_id)  # versions are immutable: one read per transaction
    if key not in uow.memo:
        cache = caches.reading(uow.conn)
        found = None if cache is None else cache.version(version_id)
        if found is None:
            row = uow.conn.execute(_VERSION_BY_ID, {"b_id": version_id}).one()
            found = Version(version_id, row.version, _parsed(row.source))
            if cache is not None:
                cache.keep_version(found)
        uow.memo[key] = found
    return uow.memo[key]  # type: ignore[no-any-return]


def load_member(uow: UnitOfWork, external_id: str, *, lock: bool = True) -> Any:
    """The member row, locked for the rest of the transaction so a member's work is serialised."""
    query = _LOCK_MEMBER_BY_REF if lock else _MEMBER_BY_REF
    row = hot.first(uow.conn, query, {"b_env": uow.env_id, "b_ref": external_id})
    if row is None:
        raise NotFound(f"no member {external_id!r}")
    return row


def load_member_at(uow: UnitOfWork, external_id: str, at: datetime, now: datetime) -> Any:
    """`load_member`, locked, with its tier at `at` as `tier_then` (see `tier_at`) and whether a
    version is due to go live by `now` as `version_due`, read in the same round trip."""
    row = hot.first(
        uow.conn,
        _LOCK_MEMBER_WITH_TIER,
        {"b_env": uow.env_id, "b_ref": external_id, "b_at": at, "b_now": now},
    )
    if row is None:
        raise NotFound(f"no member {external_id!r}")
    return row


def member_by_id(uow: UnitOfWork, member_id: int) -> Any:
    row = hot.first(uow.conn, _LOCK_MEMBER_BY_ID, {"b_id": member_id})
    assert row is not None, f"member {member_id} is gone"
    return row


def state_of(row: Any) -> MemberState:
    return MemberState(row.tier, row.progress, row.visits, dict(row.punches))


def save_state(
    uow: UnitOfWork,
    member_id: int,
    state: MemberState,
    also: Mapping[str, Any] | None = None,
    *,
    due: datetime | None = None,
) -> None:
    """Write the member's state, and `also` (other member columns) in the same statement;
    `due`: work this change made due then (see `due_by`), in that statement too."""
    params = {
        "b_id": member_id,
        "tier": state.tier,
        "progress": state.progress,
        "visits": state.visits,
        "punches": state.punches,
        **(also or {}),
    }
    if due is None:
        hot.later(uow.conn, _SAVE_STATE, params)
    else:
        hot.later(uow.conn, _SAVE_STATE_DUE, {**params, "b_due": due})


def due_by(uow: UnitOfWork, member_id: int, at: datetime | None) -> None:
    """The member has work due at `at` (a lot to expire, a reward to lapse, an order to post):
    its `next_due_at` comes down to it, so `due.catch_up` looks then. Whatever makes such work
    calls this (or passes `due` to `save_state`) in the same transaction."""
    if at is not None:
        uow.conn.execute(_DUE_BY, {"b_id": member_id, "b_due": at})


def record_tier(uow: UnitOfWork, member_id: int, at: datetime, tier: str, reason: str) -> None:
    uow.conn.execute(
        _INSERT_TIER, {"member_id": member_id, "at": at, "tier": tier, "reason": reason}
    )


def tier_at(uow: UnitOfWork, member_id: int, at: datetime) -> str:
    """The member's tier at a moment (work due at that moment already done)."""
    found = uow.conn.execute(_TIER_AT, {"b_member": member_id, "b_at": at}).scalar()
    return str(found)
