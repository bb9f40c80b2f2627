"""Members: enrolment, and the state a member's balance screen shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from punchcard.engine.members import window_bounds
from punchcard.errors import InvalidInput, InvalidState
from punchcard.services import points
from punchcard.services.context import load_member, record_tier, version_at
from punchcard.services.inputs import as_name
from punchcard.store.tables import lots, members, orders, outbox, rewards
from punchcard.store.uow import Event, UnitOfWork


def enroll(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> int:
    external_id = as_name(data.get("member"), "enroll.member")
    exists = uow.conn.execute(
        sa.select(members.c.id).where(
            members.c.env_id == uow.env_id, members.c.external_id == external_id
        )
    ).first()
    if exists is not None:
        raise InvalidState(f"member {external_id!r} is already enrolled")
    profile = _profile(data)
    program = version_at(uow, now).program
    start, end = window_bounds(program, now)
    tier = program.tiers.levels[0].id
    member_id = uow.conn.execute(
        sa.insert(members)
        .values(
            env_id=uow.env_id,
            external_id=external_id,
            enrolled_at=now,
            tier=tier,
            progress=0,
            visits=0,
            punches={card.id: 0 for card in program.punch_cards},
            window_start=start,
            window_end=end,
            **profile,
        )
        .returning(members.c.id)
    ).scalar_one()
    record_tier(uow, member_id, now, tier, "enrolled")
    uow.record(Event("member.enrolled", now, {"member": external_id, "tier": tier}, member_id))
    return int(member_id)


_PROFILE_LIMITS = {"card_number": 64, "email": 320, "phone": 32}


def _profile(data: Mapping[str, Any]) -> dict[str, str | None]:
    """Optional contact fields; they are personal data, so they never reach logs or events."""
    profile: dict[str, str | None] = {}
    for key, limit in _PROFILE_LIMITS.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= limit):
            raise InvalidInput(f"{key}: a text of at most {limit} characters")
        profile[key] = value
    email = profile["email"]
    if email is not None and ("@" not in email or email.startswith("@") or email.endswith("@")):
        raise InvalidInput("email: not an email address")
    return profile


def timeline(uow: UnitOfWork, external_id: str, after: int, limit: int) -> list[Any]:
    """The member's events in their sequence, each with its explanation, a page at a time."""
    row = load_member(uow, external_id, lock=False)
    return list(
        uow.conn.execute(
            sa.select(outbox.c.member_seq, outbox.c.type, outbox.c.created_at, outbox.c.payload)
            .where(outbox.c.member_id == row.id, outbox.c.member_seq > after)
            .order_by(outbox.c.member_seq)
            .limit(limit)
        ).all()
    )


@dataclass(frozen=True)
class PendingPoints:
    order: str | None
    points: int
    due_at: datetime


@dataclass(frozen=True)
class MemberView:
    member: str
    tier: str
    posted: int
    pending: int
    visits: int
    punch_cards: dict[str, int]
    rewards: dict[str, list[str]]
    pending_items: list[PendingPoints] = field(default_factory=list)

    @property
    def available(self) -> int:
        return max(0, self.posted)


def view(uow: UnitOfWork, external_id: str, now: datetime) -> MemberView:
    row = load_member(uow, external_id, lock=False)
    program = version_at(uow, now).program
    pending_rows = uow.conn.execute(
        sa.select(lots.c.amount, lots.c.due_at, orders.c.external_id)
        .select_from(lots.outerjoin(orders, lots.c.order_id == orders.c.id))
        .where(lots.c.member_id == row.id, lots.c.state == "pending", lots.c.amount > 0)
        .order_by(lots.c.due_at, lots.c.id)
    ).all()
    held: dict[str, list[str]] = {"available": [], "reserved": [], "used": [], "expired": []}
    for reward_id, state in uow.conn.execute(
        sa.select(rewards.c.reward_id, rewards.c.state)
        .where(rewards.c.member_id == row.id)
        .order_by(rewards.c.id)
    ).all():
        held[state].append(reward_id)
    cards = {card.id: 0 for card in program.punch_cards}
    cards.update(row.punches)
    return MemberView(
        member=row.external_id,
        tier=row.tier,
        posted=points.posted_balance(uow, program, row.id),
        pending=sum(r.amount for r in pending_rows),
        visits=row.visits,
        punch_cards=cards,
        rewards=held,
        pending_items=[PendingPoints(r.external_id, r.amount, r.due_at) for r in pending_rows],
    )
