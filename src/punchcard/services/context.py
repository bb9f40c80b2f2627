"""What every use case needs: the program version live at a time, members and their tier history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from punchcard.engine.members import MemberState
from punchcard.engine.programs import Program, parse_program
from punchcard.errors import NotFound
from punchcard.store.tables import members, program_versions, tier_changes
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


def version_at(uow: UnitOfWork, at: datetime) -> Version:
    """The version live at `at` (before the first version: the first one)."""
    cols = (program_versions.c.id, program_versions.c.version, program_versions.c.source)
    base = sa.select(*cols).where(
        program_versions.c.env_id == uow.env_id, program_versions.c.live_from.is_not(None)
    )
    row = uow.conn.execute(
        base.where(program_versions.c.live_from <= at)
        .order_by(program_versions.c.live_from.desc(), program_versions.c.version.desc())
        .limit(1)
    ).first()
    if row is None:
        row = uow.conn.execute(base.order_by(program_versions.c.live_from).limit(1)).first()
    if row is None:
        raise NotFound("no program version is live in this environment")
    version = Version(row.id, row.version, _parsed(row.source))
    uow.memo[("version", row.id)] = version
    return version


def version_by_id(uow: UnitOfWork, version_id: int) -> Version:
    key = ("version", version_id)  # versions are immutable: one read per transaction
    if key not in uow.memo:
        row = uow.conn.execute(
            sa.select(program_versions.c.version, program_versions.c.source).where(
                program_versions.c.id == version_id
            )
        ).one()
        uow.memo[key] = Version(version_id, row.version, _parsed(row.source))
    return uow.memo[key]  # type: ignore[no-any-return]


def load_member(uow: UnitOfWork, external_id: str, *, lock: bool = True) -> Any:
    """The member row, locked for the rest of the transaction so a member's work is serialised."""
    query = sa.select(members).where(
        members.c.env_id == uow.env_id, members.c.external_id == external_id
    )
    row = uow.conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFound(f"no member {external_id!r}")
    return row


def member_by_id(uow: UnitOfWork, member_id: int) -> Any:
    return uow.conn.execute(
        sa.select(members).where(members.c.id == member_id).with_for_update()
    ).one()


def state_of(row: Any) -> MemberState:
    return MemberState(row.tier, row.progress, row.visits, dict(row.punches))


def save_state(uow: UnitOfWork, member_id: int, state: MemberState) -> None:
    uow.conn.execute(
        sa.update(members)
        .where(members.c.id == member_id)
        .values(
            tier=state.tier, progress=state.progress, visits=state.visits, punches=state.punches
        )
    )


def record_tier(uow: UnitOfWork, member_id: int, at: datetime, tier: str, reason: str) -> None:
    uow.conn.execute(
        sa.insert(tier_changes).values(member_id=member_id, at=at, tier=tier, reason=reason)
    )


def tier_at(uow: UnitOfWork, member_id: int, at: datetime) -> str:
    """The member's tier at a moment (work due at that moment already done)."""
    cols = sa.select(tier_changes.c.tier).where(tier_changes.c.member_id == member_id)
    found = uow.conn.execute(
        cols.where(tier_changes.c.at <= at)
        .order_by(tier_changes.c.at.desc(), tier_changes.c.id.desc())
        .limit(1)
    ).scalar()
    if found is None:  # an order placed before the member enrolled
        found = uow.conn.execute(cols.order_by(tier_changes.c.id).limit(1)).scalar()
    return str(found)
