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
from punchcard.services import due, points
from punchcard.services.context import due_by, load_member, version_at, version_by_id
from punchcard.services.inputs import as_name
from punchcard.store import hot
from punchcard.store.tables import program_versions, rewards
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
    due_by(uow, member_id, at + timedelta(days=definition.valid_days))
    uow.record(
        Event(
            "reward.issued", at, {"reward": reward_id, "alias": alias, "source": source}, member_id
        )
    )
    return int(reward_pk)


def redeem(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> int:
    """Spend a catalogue reward's cost in posted points and issue the reward.

    An alias may not be a reward id of the live catalogue: in an order's `rewards` it would
    hide its holder's other rewards of that id. Refused before any lookup, as malformed input."""
    member_ref = as_name(data.get("member"), "redeem.member")
    reward_id = as_name(data.get("reward"), "redeem.reward")
    alias = None if data.get("as") is None else as_name(data["as"], "redeem.as")
    program = version_at(uow, now).program
    if alias in program.rewards_by_id:
        raise InvalidInput(f"redeem.as: {alias!r} is a reward id; an alias must not be one")
    member = load_member(uow, member_ref)
    definition = program.rewards_by_id.get(reward_id)
    if definition is None:
        raise NotFound(f"no reward {reward_id!r} in the catalogue")
    if alias is not None and _by_alias(uow, alias) is not None:
        raise InvalidState(f"reward alias {alias!r} is taken")
    if definition.cost is None:
        raise RewardUnavailable(f"reward {reward_id} is only earned, not redeemed")
    due.catch_up(uow, member.id, now, row=member)  # expired points are not spent, due or not
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


def _by_alias(uow: UnitOfWork, alias: str, member_id: int | None = None) -> Any:
    """The reward with this alias: anyone's (aliases are unique in an environment), or one
    member's only."""
    query = sa.select(rewards).where(rewards.c.env_id == uow.env_id, rewards.c.alias == alias)
    if member_id is not None:
        query = query.where(rewards.c.member_id == member_id)
    return uow.conn.execute(query).first()


# A reward of this id the member holds or held (whether it is usable is resolve's question).
_HELD = sa.select(rewards.c.id).where(
    rewards.c.member_id == sa.bindparam("b_member"), rewards.c.reward_id == sa.bindparam("b_reward")
)


def _candidates(uow: UnitOfWork, member_id: int, reward_id: str) -> list[Any]:
    """The member's rewards of this id an order might take, the one expiring first first."""
    return list(
        uow.conn.execute(
            sa.select(rewards)
            .where(
                rewards.c.member_id == member_id,
                rewards.c.reward_id == reward_id,
                rewards.c.state.in_(["available", "reserved"]),
            )
            .order_by(rewards.c.expires_at, rewards.c.id)
        ).all()
    )


def check_names(uow: UnitOfWork, program: Program, member_id: int, refs: Sequence[str]) -> None:
    """Every reference names something: an alias this member holds, a catalogue reward id, or
    the id of a reward this member holds (or held) that a later version dropped from the
    catalogue. And no reward is named twice: by one alias twice, or by its alias and by its
    id when the member holds no other reward of that id an order might take (it answered
    `409 reward ... is expired`, about a reward that was not).

    Another member's alias never counts, so it can not hide a reward id from this member.
    Checked before any state, so that `invalid_input` and `not_found` win over the errors after.
    """
    aliased = [_by_alias(uow, ref, member_id) for ref in refs]
    named: dict[int, int] = {}  # reward row id: the reference naming it by its alias
    for index, row in enumerate(aliased):
        if row is not None:
            if row.id in named:
                raise _named_twice(refs, named[row.id], index)
            named[row.id] = index
    for index, ref in enumerate(refs):
        if named and aliased[index] is None:  # an id: does it leave only aliased rewards?
            naming = [named.get(c.id, -1) for c in _candidates(uow, member_id, ref)]
            if naming and min(naming) >= 0:
                raise _named_twice(refs, naming[0], index)
    for ref, row in zip(refs, aliased, strict=True):
        if ref in program.rewards_by_id or row is not None:
            continue
        if uow.conn.execute(_HELD, {"b_member": member_id, "b_reward": ref}).first() is not None:
            continue  # dropped from the catalogue since, but this member holds one
        if _by_alias(uow, ref) is not None:
            raise NotFound(f"member holds no reward {ref!r}")
        raise NotFound(f"no reward {ref!r}")


def _named_twice(refs: Sequence[str], alias_at: int, again_at: int) -> InvalidInput:
    earlier, later = sorted((alias_at, again_at))
    return InvalidInput(
        f"rewards[{later}]: the reward {refs[alias_at]!r} is named twice"
        f" (rewards[{earlier}] names it too)"
    )


def resolve(
    uow: UnitOfWork,
    program: Program,
    member_id: int,
    refs: Sequence[str],
    now: datetime,
    order_id: int | None = None,
) -> list[Any]:
    """Reward rows for an order's references, among the member's own rewards: an alias, else
    an id (the available one expiring first). Rewards this order already holds stay usable
    (they are honoured even if expired)."""
    check_names(uow, program, member_id, refs)
    chosen: dict[int, Any] = {}

    def usable(row: Any) -> bool:
        if order_id is not None and row.order_id == order_id and row.state == "reserved":
            return True
        return bool(row.state == "available" and row.expires_at > now)

    aliased = [_by_alias(uow, ref, member_id) for ref in refs]
    for ref, row in zip(refs, aliased, strict=True):  # aliases first: each names its reward,
        if row is not None:  # where an id takes any (`[five-off, r1]` leaves r1 to its alias)
            if not usable(row):
                state = "expired" if row.state == "available" else row.state
                raise RewardUnavailable(f"reward {ref} is {state}")
            chosen[row.id] = row
    for ref, row in zip(refs, aliased, strict=True):
        if row is None:
            candidates = _candidates(uow, member_id, ref)
            found = next((c for c in candidates if c.id not in chosen and usable(c)), None)
            if found is None:
                raise RewardUnavailable(f"member holds no available {ref}")
            chosen[found.id] = found
    # One order for free items everywhere (placement, edit, close): the order they were issued in.
    return sorted(chosen.values(), key=lambda row: row.id)


def definitions(uow: UnitOfWork, program: Program, rows: Sequence[Any]) -> list[Reward]:
    """Each held reward's terms: the order's version's, or, for a reward that version no
    longer lists, the terms of the version it was issued under. A reward the member earned or
    paid points for stays usable until it lapses, whatever the catalogue says since."""
    out = []
    for row in rows:
        definition = program.rewards_by_id.get(row.reward_id)
        if definition is None:
            definition = _issued_terms(uow, row)
        if definition is None:
            raise InvalidInput(f"reward {row.reward_id} is not in this order's program version")
        out.append(definition)
    return out


def _issued_terms(uow: UnitOfWork, row: Any) -> Reward | None:
    """The reward's terms in the latest version live when it was issued that lists it (a
    version published at that same instant, after the issue, may already have dropped it)."""
    found = uow.conn.execute(
        sa.select(program_versions.c.id)
        .where(
            program_versions.c.env_id == uow.env_id,
            program_versions.c.live_from <= row.issued_at,
        )
        .order_by(program_versions.c.live_from.desc(), program_versions.c.version.desc())
    ).scalars()
    for version_id in found:
        definition = version_by_id(uow, version_id).program.rewards_by_id.get(row.reward_id)
        if definition is not None:
            return definition
    return None


_OF_ORDER = (
    sa.select(rewards).where(rewards.c.order_id == sa.bindparam("b_order")).order_by(rewards.c.id)
)


def of_order(uow: UnitOfWork, order_id: int) -> list[Any]:
    return hot.rows(uow.conn, _OF_ORDER, {"b_order": order_id})


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
        if state == "available":  # back on the member: it lapses at its expiry again
            due_by(uow, row.member_id, row.expires_at)
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


def held_by(uow: UnitOfWork, member_id: int, *, after: int = 0, limit: int = 500) -> list[Any]:
    """A member's rewards in issue order, a page at a time (after a reward's row id)."""
    return list(
        uow.conn.execute(
            sa.select(rewards)
            .where(rewards.c.member_id == member_id, rewards.c.id > after)
            .order_by(rewards.c.id)
            .limit(limit)
        ).all()
    )
