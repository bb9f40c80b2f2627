"""Rewards: redeeming points for a catalogue reward, issuing earned ones, applying them to orders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from punchcard.engine.programs import Program, Reward
from punchcard.errors import (
    InsufficientPoints,
    InvalidInput,
    InvalidState,
    NotFound,
    RewardUnavailable,
)
from punchcard.lifecycle.machines import REWARD
from punchcard.services import points
from punchcard.services.context import load_member, version_at
from punchcard.store.tables import rewards
from punchcard.store.uow import Event, UnitOfWork


def issue(
    uow: UnitOfWork,
    program: Program,
    member_id: int,
    reward_id: str,
    at: datetime,
    source: str,
    alias: str | None = None,
) -> int:
    definition = program.rewards_by_id[reward_id]
    reward_pk = uow.conn.execute(
        sa.insert(rewards)
        .values(
            env_id=uow.env_id,
            member_id=member_id,
            alias=alias,
            reward_id=reward_id,
            state="available",
            issued_at=at,
            expires_at=at + timedelta(days=definition.valid_days),
            source=source,
        )
        .returning(rewards.c.id)
    ).scalar_one()
    uow.record(
        Event(
            "reward.issued", at, {"reward": reward_id, "alias": alias, "source": source}, member_id
        )
    )
    return int(reward_pk)


def redeem(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> int:
    """Spend a catalogue reward's cost in posted points and issue the reward."""
    member_ref, reward_id, alias = data.get("member"), data.get("reward"), data.get("as")
    if not isinstance(member_ref, str) or not isinstance(reward_id, str):
        raise InvalidInput("redeem needs member and reward")
    if alias is not None and not isinstance(alias, str):
        raise InvalidInput("as: a reward alias is a text")
    member = load_member(uow, member_ref)
    program = version_at(uow, now).program
    definition = program.rewards_by_id.get(reward_id)
    if definition is None:
        raise NotFound(f"no reward {reward_id!r} in the catalogue")
    if alias is not None and _by_alias(uow, alias) is not None:
        raise InvalidState(f"reward alias {alias!r} is taken")
    if definition.cost is None:
        raise RewardUnavailable(f"reward {reward_id} is only earned, not redeemed")
    balance = points.posted_balance(uow, program, member.id)
    if max(0, balance) < definition.cost:
        raise InsufficientPoints(
            f"{reward_id} costs {definition.cost}; {max(0, balance)} available"
        )
    points.spend(uow, program, member.id, definition.cost, now, f"reward:{reward_id}")
    uow.record(
        Event("reward.redeemed", now, {"reward": reward_id, "points": definition.cost}, member.id)
    )
    return issue(uow, program, member.id, reward_id, now, "redeem", alias)


def _by_alias(uow: UnitOfWork, alias: str) -> Any:
    return uow.conn.execute(
        sa.select(rewards).where(rewards.c.env_id == uow.env_id, rewards.c.alias == alias)
    ).first()


def resolve(
    uow: UnitOfWork, program: Program, member_id: int, refs: Sequence[str], now: datetime
) -> list[Any]:
    """Reward rows for an order's references: an alias, or an id (the available one expiring first)."""
    chosen: list[Any] = []
    for ref in refs:
        row = _by_alias(uow, ref)
        if row is not None:
            if row.member_id != member_id:
                raise NotFound(f"member holds no reward {ref!r}")
            if (
                row.state != "available"
                or row.expires_at <= now
                or row.id in {r.id for r in chosen}
            ):
                raise RewardUnavailable(f"reward {ref} is {row.state}")
            chosen.append(row)
            continue
        if ref not in program.rewards_by_id:
            raise NotFound(f"no reward {ref!r}")
        row = uow.conn.execute(
            sa.select(rewards)
            .where(
                rewards.c.member_id == member_id,
                rewards.c.reward_id == ref,
                rewards.c.state == "available",
                rewards.c.expires_at > now,
                rewards.c.id.not_in([r.id for r in chosen]),
            )
            .order_by(rewards.c.expires_at, rewards.c.id)
            .limit(1)
        ).first()
        if row is None:
            raise RewardUnavailable(f"member holds no available {ref}")
        chosen.append(row)
    return chosen


def definitions(program: Program, rows: Sequence[Any]) -> list[Reward]:
    out = []
    for row in rows:
        definition = program.rewards_by_id.get(row.reward_id)
        if definition is None:
            raise InvalidInput(f"reward {row.reward_id} is not in this order's program version")
        out.append(definition)
    return out


def of_order(uow: UnitOfWork, order_id: int) -> list[Any]:
    return list(
        uow.conn.execute(
            sa.select(rewards).where(rewards.c.order_id == order_id).order_by(rewards.c.id)
        ).all()
    )


EVENT_TYPES = {"reserved": "reward.reserved", "used": "reward.used", "available": "reward.released"}


def move(
    uow: UnitOfWork, rows: Sequence[Any], event: str, order_id: int | None, at: datetime
) -> None:
    """Move rewards through their lifecycle; a move the table does not list is invalid_state."""
    for row in rows:
        state = REWARD.target(row.state, event, row.alias or row.reward_id)
        uow.conn.execute(
            sa.update(rewards).where(rewards.c.id == row.id).values(state=state, order_id=order_id)
        )
        uow.record(
            Event(
                EVENT_TYPES[state], at, {"reward": row.reward_id, "alias": row.alias}, row.member_id
            )
        )


def available(uow: UnitOfWork, member_id: int, now: datetime) -> list[Any]:
    return list(
        uow.conn.execute(
            sa.select(rewards)
            .where(
                rewards.c.member_id == member_id,
                rewards.c.state == "available",
                rewards.c.expires_at > now,
            )
            .order_by(rewards.c.expires_at, rewards.c.id)
        ).all()
    )


def held_by(uow: UnitOfWork, member_id: int) -> list[Any]:
    return list(
        uow.conn.execute(
            sa.select(rewards).where(rewards.c.member_id == member_id).order_by(rewards.c.id)
        ).all()
    )
