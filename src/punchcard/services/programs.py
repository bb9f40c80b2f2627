"""Environments and program versions: a version is immutable and live from a time.

Publishing and activating call `caches.changed`: the versions live in a live environment are
cached in process (services/caches.py). A version going live at its time changes nothing
cached: a cached span already ends where the next version goes live."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import yaml

from punchcard.engine.documents import load_document, plain
from punchcard.engine.members import window_bounds
from punchcard.engine.programs import Program, ProgramError, program_from_data
from punchcard.errors import InvalidInput, InvalidState, NotFound
from punchcard.services import caches
from punchcard.services.context import Version, record_tier, version_by_id
from punchcard.store.tables import environments, members, orders, program_versions
from punchcard.store.uow import Event, UnitOfWork


def create_environment(
    engine: sa.Engine, name: str, now: datetime, clock: datetime | None = None
) -> str:
    env_id = uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(
            sa.insert(environments).values(
                id=env_id, name=name, created_at=now, clock=clock, close_seq=0
            )
        )
    return env_id


def program_text(data: Any) -> str:
    """An inline program (already loaded data) as YAML text, numbers kept as their text."""
    return yaml.safe_dump(plain(data), sort_keys=False, allow_unicode=True)


def publish(uow: UnitOfWork, source: str, now: datetime, *, live_from: datetime | None) -> int:
    """Upload a new version, live from `live_from` (None: uploaded, activated later).

    Orders placed before a version goes live keep the version they were placed under.
    """
    if live_from is not None and live_from < now:
        raise InvalidInput(
            "a version can not go live in the past: orders already placed keep theirs"
        )
    try:
        data, lines = load_document(source)
        program = program_from_data(data, lines)
    except (ProgramError, ValueError) as exc:
        raise InvalidInput(f"program: {exc}") from exc
    _lock_versions(uow)
    caches.changed(uow.conn, uow.env_id)  # the live spans cached may end at this version
    current = uow.conn.execute(
        sa.select(program_versions.c.version, program_versions.c.program_id)
        .where(program_versions.c.env_id == uow.env_id)
        .order_by(program_versions.c.version.desc())
        .limit(1)
    ).first()
    if current is not None and current.program_id != program.program:
        raise InvalidInput(
            f"program: this environment runs {current.program_id!r}, not {program.program!r}"
        )
    number = 1 if current is None else current.version + 1
    version_id = uow.conn.execute(
        sa.insert(program_versions)
        .values(
            env_id=uow.env_id,
            program_id=program.program,
            version=number,
            live_from=live_from,
            document=plain(data),
            source=source,
        )
        .returning(program_versions.c.id)
    ).scalar_one()
    if live_from is not None and live_from <= now:
        go_live(uow, version_id, program, live_from)
    uow.record(Event("program.published", now, {"program": program.program, "version": number}))
    return int(version_id)


def go_live(uow: UnitOfWork, version_id: int, program: Program, at: datetime) -> None:
    """Apply a version going live at `at` to the members: member-level rules follow the
    version live when they apply, so inactivity deadlines and tier windows are planned
    anew. Done when the version goes live, not when it is uploaded: at once for a version
    live from now, as due work (services/due.py) for one live from later. Done once: a
    worker that lost its lease while waiting here finds it done.

    A version that plans members alike the version it takes over from re-plans no one, so
    it neither locks nor writes a member (most publishes change only promotions and
    rewards): re-planning every member holds all of them until it commits (about half a
    minute per million on PostgreSQL), and every request for them waits. Only when that
    version is also the last one applied: with the worker behind, a version live from
    earlier can be applied after it, and until the versions after it are applied again
    members hold a mix of plans."""
    _lock_versions(uow)  # held already by a publish or an activation; the worker takes it here
    planned = sa.select(program_versions.c.planned).where(program_versions.c.id == version_id)
    if uow.conn.execute(planned).scalar_one():
        return
    before = _live_before(uow, version_id, at)
    held = _last_applied(uow)
    alike = (
        before is not None
        and held is not None
        and held.id == before.id
        and _plans_alike(before.program, program)
    )
    if not alike:
        _reschedule_inactivity(uow, program)
        _replan_windows(uow, program, at)
        metrics = {v.program.tiers.metric for v in (before, held) if v is not None}
        if metrics - {program.tiers.metric}:
            _restate_progress(uow, program)
        _place_unknown_tiers(uow, program, at)
    applied = uow.conn.execute(
        sa.select(sa.func.max(program_versions.c.applied_seq)).where(
            program_versions.c.env_id == uow.env_id
        )
    ).scalar()
    uow.conn.execute(
        sa.update(program_versions)
        .where(program_versions.c.id == version_id)
        .values(planned=True, applied_seq=(applied or 0) + 1)
    )
    # Versions that took over after this one but were applied before it (the worker was
    # behind) are applied again, as due work at their own `live_from`, in time order: the
    # members end on the plan of the version live, not of this one.
    number = version_by_id(uow, version_id).number
    uow.conn.execute(
        sa.update(program_versions)
        .where(
            program_versions.c.env_id == uow.env_id,
            program_versions.c.planned.is_(True),
            sa.or_(
                program_versions.c.live_from > at,
                sa.and_(program_versions.c.live_from == at, program_versions.c.version > number),
            ),
        )
        .values(planned=False)
    )


def _last_applied(uow: UnitOfWork) -> Version | None:
    """The version whose going live was applied last. None before any, and for versions
    applied before the order was kept (0010), so the next one re-plans everyone."""
    found = uow.conn.execute(
        sa.select(program_versions.c.id)
        .where(program_versions.c.env_id == uow.env_id, program_versions.c.applied_seq.is_not(None))
        .order_by(program_versions.c.applied_seq.desc())
        .limit(1)
    ).scalar()
    return None if found is None else version_by_id(uow, found)


def _plans_alike(old: Program, new: Program) -> bool:
    """Whether members planned by `old` are planned as `new` would plan them: the same
    inactivity days, the same tier window in the same time zone, the same tier metric, and
    every tier level still known. Thresholds and multipliers apply at the next posting,
    never at going live (choice 11), so they do not count."""
    days = _inactivity_days(old) == _inactivity_days(new)
    window = old.tiers.window == new.tiers.window and (
        new.tiers.window == "lifetime" or old.timezone == new.timezone
    )
    levels = set(old.levels_by_id) <= set(new.levels_by_id)
    return days and window and old.tiers.metric == new.tiers.metric and levels


def _inactivity_days(program: Program) -> int | None:
    return program.expiry.inactivity_days if program.expiry else None


def _live_before(uow: UnitOfWork, version_id: int, at: datetime) -> Version | None:
    """The version this one takes over from at `at` (None for the first): the latest version
    before it in (live_from, number) order, the order in which versions take over (one that
    went live at that same instant counts if it has a lower number)."""
    number = version_by_id(uow, version_id).number
    found = uow.conn.execute(
        sa.select(program_versions.c.id)
        .where(
            program_versions.c.env_id == uow.env_id,
            sa.or_(
                program_versions.c.live_from < at,
                sa.and_(program_versions.c.live_from == at, program_versions.c.version < number),
            ),
        )
        .order_by(program_versions.c.live_from.desc(), program_versions.c.version.desc())
        .limit(1)
    ).scalar()
    return None if found is None else version_by_id(uow, found)


def _restate_progress(uow: UnitOfWork, program: Program) -> None:
    """A new tier `metric` counts the current window's progress in its own unit: each order
    keeps what it added to the window it last added to in every unit (points, visit,
    spend), so progress is their sum in the new one, not the old number in the old unit."""
    added = {
        "points": orders.c.window_points,
        "visits": orders.c.window_visit,
        "spend": orders.c.window_spend,
    }[program.tiers.metric]
    in_window = (
        sa.select(sa.func.coalesce(sa.func.sum(added), 0))
        .where(orders.c.member_id == members.c.id, orders.c.posted_window == members.c.window_start)
        .scalar_subquery()
    )
    uow.conn.execute(
        sa.update(members).where(members.c.env_id == uow.env_id).values(progress=in_window)
    )


def _place_unknown_tiers(uow: UnitOfWork, program: Program, at: datetime) -> None:
    """A member at a level the new version does not know (renamed or dropped) is placed in
    its levels by progress as it goes live, so the member's next order is evaluated at a
    level the version knows and earns its multiplier (choice 11)."""
    unknown = uow.conn.execute(
        sa.select(members.c.id, members.c.tier, members.c.progress).where(
            members.c.env_id == uow.env_id, members.c.tier.not_in(list(program.levels_by_id))
        )
    ).all()
    for row in unknown:
        placed = program.level_for_progress(row.progress)
        uow.conn.execute(sa.update(members).where(members.c.id == row.id).values(tier=placed))
        record_tier(uow, row.id, at, placed, "program_change")
        uow.record(Event("tier.changed", at, {"from": row.tier, "to": placed}, row.id))


def _lock_versions(uow: UnitOfWork) -> None:
    """The environment's versions, locked until the transaction ends: they are numbered and
    activated one request at a time (two publishes read the same last number; two
    activations both saw none). An advisory lock on PostgreSQL, not the environment's row,
    which the workers' leases update; SQLite's writers queue anyway."""
    if uow.conn.dialect.name == "postgresql":
        uow.conn.execute(_LOCK_VERSIONS, {"b_key": f"punchcard program versions {uow.env_id}"})


_LOCK_VERSIONS = sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.bindparam("b_key"))))


def _replan_windows(uow: UnitOfWork, program: Program, live_from: datetime) -> None:
    """Tier windows follow the version live when they apply. From `live_from` a lifetime
    version never rolls; a calendar-year version ends the current window at the next
    1 January in its time zone. Progress so far stays in the current window.

    A member whose window began at that same New Year (in the old version's time zone,
    up to 26 hours apart; or already rolled by a request before the worker came to this)
    is in that year's window already: it ends a year later, so it never rolls twice. A
    member whose calendar window belongs to the year before the new zone's current one
    (a zone to the east, already past New Year) rolls as the version goes live, so no New
    Year is skipped."""
    if program.tiers.window == "lifetime":
        uow.conn.execute(
            sa.update(members).where(members.c.env_id == uow.env_id).values(window_end=None)
        )
        return
    start, end = window_bounds(program, live_from)
    assert end is not None
    _, after = window_bounds(program, end)
    same_new_year = members.c.window_start >= end - SAME_NEW_YEAR
    year_before = sa.and_(
        members.c.window_end.is_not(None),  # a calendar window (a lifetime one stays whole)
        members.c.window_start < start - SAME_NEW_YEAR,
    )
    mine = members.c.env_id == uow.env_id
    uow.conn.execute(sa.update(members).where(mine, same_new_year).values(window_end=after))
    uow.conn.execute(sa.update(members).where(mine, year_before).values(window_end=live_from))
    uow.conn.execute(
        sa.update(members)
        .where(
            mine,
            sa.or_(
                members.c.window_start.is_(None),
                sa.and_(sa.not_(same_new_year), sa.not_(year_before)),
            ),
        )
        .values(window_end=end)
    )


# The widest gap between two time zones' New Years (UTC-12 to UTC+14).
SAME_NEW_YEAR = timedelta(hours=26)


def _lock_members(uow: UnitOfWork) -> None:
    """Every member of the environment, locked in id order, as every multi-member lock is
    taken (so it can not deadlock with a posting group): a publish re-plans them all."""
    locked = (
        sa.select(members.c.id)
        .where(members.c.env_id == uow.env_id)
        .order_by(members.c.id)
        .with_for_update(key_share=True)
        .subquery()
    )
    uow.conn.execute(sa.select(sa.func.count()).select_from(locked)).scalar_one()


def _reschedule_inactivity(uow: UnitOfWork, program: Program) -> None:
    """Inactivity expiry follows the version live when it applies: re-plan it on publish,
    from each member's last activity as it is under the member's lock (activity committed
    while the publish ran must not be planned from the activity before it)."""
    _lock_members(uow)
    days = _inactivity_days(program)
    active = sa.and_(members.c.env_id == uow.env_id, members.c.last_activity_at.is_not(None))
    if days is None:
        uow.conn.execute(sa.update(members).where(active).values(inactivity_due_at=None))
    elif uow.conn.dialect.name == "postgresql":  # one statement, however many members
        # In hours: a day here is 24 hours, as everywhere in Punchcard; interval days would
        # follow the session's time zone across a daylight saving change.
        after = sa.func.make_interval(0, 0, 0, 0, sa.bindparam("b_hours", days * 24))
        uow.conn.execute(
            sa.update(members)
            .where(active)
            .values(inactivity_due_at=members.c.last_activity_at + after)
        )
    else:  # SQLite keeps times as text: computed here, a member at a time (its writers queue)
        rows = uow.conn.execute(sa.select(members.c.id, members.c.last_activity_at).where(active))
        for row in rows.all():
            uow.conn.execute(
                sa.update(members)
                .where(members.c.id == row.id)
                .values(inactivity_due_at=row.last_activity_at + timedelta(days=days))
            )


def activate(uow: UnitOfWork, number: int, at: datetime, now: datetime) -> None:
    """Make an uploaded version live from `at` (not in the past). Activation happens once."""
    _lock_versions(uow)
    caches.changed(uow.conn, uow.env_id)  # the live spans cached may end at this version
    row = uow.conn.execute(
        sa.select(program_versions.c.id, program_versions.c.live_from).where(
            program_versions.c.env_id == uow.env_id, program_versions.c.version == number
        )
    ).first()
    if row is None:
        raise NotFound(f"no program version {number}")
    if row.live_from is not None:
        raise InvalidState(f"version {number} is already live from {row.live_from.isoformat()}")
    if at < now:
        raise InvalidInput(
            "a version can not go live in the past: orders already placed keep theirs"
        )
    uow.conn.execute(
        sa.update(program_versions).where(program_versions.c.id == row.id).values(live_from=at)
    )
    if at <= now:
        go_live(uow, row.id, version_by_id(uow, row.id).program, at)
    uow.record(Event("program.activated", now, {"version": number, "live_from": at.isoformat()}))


def versions(uow: UnitOfWork, *, after: int = 0, limit: int = 500) -> list[Any]:
    return list(
        uow.conn.execute(
            sa.select(
                program_versions.c.version,
                program_versions.c.program_id,
                program_versions.c.live_from,
                program_versions.c.document,
            )
            .where(program_versions.c.env_id == uow.env_id, program_versions.c.version > after)
            .order_by(program_versions.c.version)
            .limit(limit)
        ).all()
    )
