"""Members: enrolment, points transfers between members, and what a balance screen shows."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from punchcard.engine.members import window_bounds
from punchcard.engine.programs import Program
from punchcard.errors import InsufficientPoints, InvalidInput, InvalidState, NotFound
from punchcard.services import due, points
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


MAX_TRANSFER = 10**12  # points in one transfer


@dataclass(frozen=True)
class PointsTransfer:
    id: str  # also the ledger reference, transfer:<id>
    source: str
    target: str
    points: int
    paid_debt: int  # of the points, what paid the target's debt


def transfer_points(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> PointsTransfer:
    """Move available (posted) points from one member to another: household pooling, gifts."""
    source = as_name(data.get("member"), "member")
    target = as_name(data.get("to"), "to")
    amount = data.get("points")
    if type(amount) is not int or not 0 < amount <= MAX_TRANSFER:
        raise InvalidInput(f"points: a whole number from 1 to {MAX_TRANSFER}")
    if source == target:
        raise InvalidInput("to: a transfer moves points between two different members")
    found = {
        row.external_id: row.id
        for row in uow.conn.execute(
            sa.select(members.c.id, members.c.external_id).where(
                members.c.env_id == uow.env_id, members.c.external_id.in_([source, target])
            )
        ).all()
    }
    for name in (source, target):
        if name not in found:
            raise NotFound(f"no member {name!r}")
    # Both members locked in id order: two transfers in opposite directions never deadlock.
    for member_id in sorted(found.values()):
        uow.conn.execute(
            sa.select(members.c.id).where(members.c.id == member_id).with_for_update()
        ).one()
    program = version_at(uow, now).program
    for member_id in sorted(found.values()):  # both: the receiver's overdue expiry too
        due.catch_up(uow, member_id, now)  # expired points are not sent, due work or not
    available = max(0, points.posted_balance(uow, program, found[source]))
    if available < amount:
        raise InsufficientPoints(
            f"member {source} has {available} points available, {amount} asked"
        )
    moved_id = f"tr_{uuid.uuid4().hex[:20]}"
    paid = points.move(
        uow, program, found[source], found[target], amount, now, f"transfer:{moved_id}"
    )
    payload = {"transfer": moved_id, "from": source, "to": target, "points": amount}
    uow.record(Event("points.transferred", now, payload, found[source]))
    uow.record(Event("points.transferred", now, {**payload, "paid_debt": paid}, found[target]))
    return PointsTransfer(moved_id, source, target, amount, paid)


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
    return _view(uow, program, row)


def balances(uow: UnitOfWork, external_ids: list[str], now: datetime) -> list[MemberView]:
    """Several members' views; the caller reads them in one snapshot (`ledger.snapshot`)."""
    program = version_at(uow, now).program
    rows = {
        r.external_id: r
        for r in uow.conn.execute(
            sa.select(members).where(
                members.c.env_id == uow.env_id, members.c.external_id.in_(external_ids)
            )
        ).all()
    }
    for name in external_ids:
        if name not in rows:
            raise NotFound(f"no member {name!r}")
    return [_view(uow, program, rows[name]) for name in external_ids]


def _view(uow: UnitOfWork, program: Program, row: Any) -> MemberView:
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
