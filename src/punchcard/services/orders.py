"""Orders: place, close, edit, refund, void, and posting their effects when the delay has passed.

An order earns nothing while open. Closing evaluates it and makes its effects pending
until close + accrual_delay; posting moves them onto the member. Refunds, edits and
voids re-evaluate and apply the difference: to the pending amounts while pending, as
postings at once after (rule 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from punchcard.engine.evaluate import (
    Allocation,
    Outcome,
    RewardMatchesNothing,
    Standing,
    allocate,
    evaluate,
)
from punchcard.engine.members import InWindow, add_progress, restate, withdraw
from punchcard.engine.money import format_money
from punchcard.engine.orders import (
    ORDER_PARTS,
    Order,
    OrderFormatError,
    check_order,
    parse_order_parts,
)
from punchcard.engine.programs import Program, Reward
from punchcard.errors import InvalidInput, InvalidState, NotFound
from punchcard.lifecycle.machines import ORDER, POINTS_LOT, THRESHOLD, tier_machine
from punchcard.services import due, points, rewards
from punchcard.services.context import (
    VERSION_DUE,
    due_by,
    load_member,
    load_member_at,
    member_by_id,
    record_tier,
    save_state,
    state_of,
    tier_at,
    version_at,
    version_by_id,
)
from punchcard.services.inputs import as_name, parse_time
from punchcard.store import hot
from punchcard.store.codec import (
    order_document,
    order_from_row,
    outcome_document,
    outcome_from_document,
)
from punchcard.store.database import insert_new
from punchcard.store.sequences import NEXT_CLOSE_SEQ, next_close_seq
from punchcard.store.tables import lots, members, orders, promotion_uses
from punchcard.store.uow import Event, UnitOfWork

PLACE_KEYS = {"id", "member", "at", "status", *ORDER_PARTS, "rewards"}


def place(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Place an order, open or (the default) closed at once; returns its view. A closed order
    that holds no rewards is written in one statement in its final state (closed, and posted
    too when its accrual delay has already passed): never inserted open, then updated."""
    order, member_ref, status, refs = _parse_new(data, now)
    member = load_member_at(uow, member_ref, order.at, now)
    if due.catch_up(uow, member.id, now, row=member):  # rule 14: what fell due is done first
        member = load_member_at(uow, member_ref, order.at, now)
    version = version_at(uow, order.at)
    taken = InvalidState(f"order id {order.id!r} is taken")
    if refs:
        rewards.check_names(uow, version.program, member.id, refs)
        if _find(uow, order.id) is not None:
            raise taken  # before the rewards: their errors would hide this one
    chosen = rewards.resolve(uow, version.program, member.id, refs, now) if refs else []
    allocation = _allocate(
        version.program, order, rewards.definitions(uow, version.program, chosen)
    )
    new = {
        "env_id": uow.env_id,
        "external_id": order.id,
        "member_id": member.id,
        "state": "open",
        "at": order.at,
        "version_id": version.id,
        # Everything due before this moment is done, and nothing this order causes is:
        # so this is the tier at its placed time, even when its own posting lifts it.
        # Placed at `now` (without `at`, the usual case), its due work done, the member's row
        # holds the tier; placed earlier, the tier then was read with the member.
        "tier": member.tier if order.at == now else member.tier_then,
        "document": order_document(order),
        "refunded": {},
        "visit": False,
        "posted_visit": False,
    }
    closing = None
    if status == "closed" and not chosen:
        standing = _standing(uow, version.program, _Placed(member.id, order.at, new["tier"]))
        outcome = evaluate(version.program, order, allocation, standing)
        closing = _Closing("closed", allocation, outcome, member, _posts_now(member, now))
        new.update(closing.columns(uow, version.program, now))
    row = hot.first(uow.conn, _insert_order(uow.conn, numbered=closing is not None), new)
    if row is None:
        raise taken
    if closing is not None:
        closing.done(uow, version.program, row, [], now, fresh=True)
    else:
        rewards.move(uow, chosen, "apply to an open order", row.id, now)
        if status == "closed":
            row = _close(uow, row, member, now)
    # A new order holds exactly the rewards it chose: no need to read them back.
    names: list[str] | None = None if chosen else []
    return _view_of(uow, row, member=member.external_id, reward_names=names)


def close(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> None:
    row, member = _locked(uow, data, now)
    _close(uow, row, member, now)


# Built once: the SET columns are the parameters' (beside `b_order`).
_SET_ORDER = sa.update(orders).where(orders.c.id == sa.bindparam("b_order"))
_PENDING_LOT = sa.select(lots.c.id).where(
    lots.c.order_id == sa.bindparam("b_order"), lots.c.state == "pending"
)
# Built once: every close runs one (PostgreSQL numbers it from its sequence, in the statement).
_CLOSE = _SET_ORDER.returning(*orders.c)
_CLOSE_FROM_SEQUENCE = _CLOSE.values(close_seq=NEXT_CLOSE_SEQ)


def _insert_order(conn: sa.Connection, *, numbered: bool) -> Any:
    """The INSERT of a new order; `numbered` (placed closed) on PostgreSQL takes its close
    number from the sequence in the statement."""
    statement = insert_new(conn, orders, *orders.c)  # built once per dialect
    return _numbered(statement) if numbered and conn.dialect.name == "postgresql" else statement


@lru_cache(maxsize=2)
def _numbered(statement: Any) -> Any:
    """Built once too: a statement made per call costs its cache key every time."""
    return statement.values(close_seq=NEXT_CLOSE_SEQ)


@dataclass(frozen=True, slots=True)
class _Placed:
    """What a standing needs of an order not written yet."""

    member_id: int
    at: datetime
    tier: str
    id: None = None


@dataclass(frozen=True, slots=True)
class _Closing:
    """An order being closed: its evaluation, and what closing it writes."""

    state: str
    allocation: Allocation
    outcome: Outcome
    member: Any  # the member's row, locked, its due work done
    may_post: bool  # see `_posts_now`

    def columns(self, uow: UnitOfWork, program: Program, now: datetime) -> dict[str, Any]:
        """The order's columns as closed (and as posted, when nothing delays its posting)."""
        due_at = now + program.earn.accrual_delay
        seq = next_close_seq(uow.conn, uow.env_id)
        outcome = self.outcome
        columns = {
            "state": self.state,
            "line_discounts": dict(self.allocation.line_discounts),
            "closed_at": now,
            "post_state": "pending",
            "due_at": due_at,
            **({} if seq is None else {"close_seq": seq}),
            **_outcome_columns(outcome),
        }
        if due_at <= now and self.may_post:  # posted here: written so, never updated to it
            columns.update(
                post_state="posted",
                posted_points=outcome.points,
                posted_visit=outcome.visit,
                posted_spend=outcome.qualifying_spend,
                posted_window=self.member.window_start,
                window_points=outcome.points,
                window_visit=int(outcome.visit),
                window_spend=outcome.qualifying_spend,
            )
        return columns

    def done(
        self,
        uow: UnitOfWork,
        program: Program,
        row: Any,
        held: list[Any],
        now: datetime,
        *,
        fresh: bool,
    ) -> None:
        """What follows the order's row: its lot, promotion uses, rewards, events, and its
        posting when it posts at once (the events as a later posting would send them)."""
        outcome = self.outcome
        if row.post_state == "pending":
            due_by(uow, row.member_id, row.due_at)
            if outcome.points:
                _pending_lot(uow, row, outcome.points, row.due_at)
        _sync_promotions(uow, row, outcome, fresh=fresh)
        rewards.move(uow, held, "order closes", row.id, now)
        uow.record(Event("order.evaluated", now, _evaluated(uow, row, outcome), row.member_id))
        if row.post_state == "pending":  # posted at once, its points were never pending
            uow.record(
                Event(
                    "points.pending",
                    now,
                    {
                        "order": row.external_id,
                        "points": outcome.points,
                        "due_at": row.due_at.isoformat(),
                    },
                    row.member_id,
                )
            )
        else:
            _post_effects(
                uow, version_at(uow, now).program, self.member, row, outcome.points, None, now
            )


def _close(uow: UnitOfWork, row: Any, member: Any, now: datetime) -> Any:
    """Close an open order; returns its row as closed (and posted, if it posts at once)."""
    closed = ORDER.target(row.state, "close", row.external_id)
    program = version_by_id(uow, row.version_id).program
    order = order_from_row(row)
    held = rewards.of_order(uow, row.id)
    allocation = _allocate(program, order, rewards.definitions(uow, program, held))
    standing = _standing(uow, program, row)
    outcome = evaluate(program, order, allocation, standing)
    closing = _Closing(closed, allocation, outcome, member, _posts_now(member, now))
    columns = closing.columns(uow, program, now)
    statement = _CLOSE if "close_seq" in columns else _CLOSE_FROM_SEQUENCE
    row = hot.first(uow.conn, statement, {"b_order": row.id, **columns})
    closing.done(uow, program, row, held, now, fresh=False)
    return row


def edit(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> None:
    """Replace parts of an order; a closed one is re-evaluated and the difference posted."""
    unknown = sorted(set(data) - {"order", "at", *ORDER_PARTS, "rewards"})
    if unknown:
        raise InvalidInput(f"edit: {unknown[0]} can not be edited")
    try:
        parts = parse_order_parts(data, "edit")
    except OrderFormatError as exc:
        raise InvalidInput(str(exc)) from exc
    refs = _reward_refs(data) if "rewards" in data else None
    row, member = _locked(uow, data, now)
    order = order_from_row(row).with_parts(**parts)
    try:
        check_order(order, "edit")
    except OrderFormatError as exc:
        raise InvalidInput(str(exc)) from exc
    program = version_by_id(uow, row.version_id).program
    if refs is not None:
        rewards.check_names(uow, program, member.id, refs)
    ORDER.target(row.state, "edit", row.external_id)
    if refs is not None and row.state != "open":
        raise InvalidState(f"order {row.external_id} is closed: its rewards can no longer change")
    refunded = dict(row.refunded)
    for line_id, qty in refunded.items():
        line = order.line_index.get(line_id)
        if line is None or line.qty < qty:
            raise InvalidInput(f"edit: line {line_id} can not go below its {qty} refunded units")
    document = order_document(order)
    if row.state == "open":
        held = rewards.of_order(uow, row.id)
        if refs is not None:
            wanted = rewards.resolve(uow, program, member.id, refs, now, order_id=row.id)
            kept = {r.id for r in wanted}
            rewards.move(uow, [r for r in held if r.id not in kept], "release", None, now)
            taken = {r.id for r in held}
            rewards.move(
                uow, [r for r in wanted if r.id not in taken], "apply to an open order", row.id, now
            )
            held = wanted
        _allocate(program, order, rewards.definitions(uow, program, held))
        uow.conn.execute(sa.update(orders).where(orders.c.id == row.id).values(document=document))
        return
    held = rewards.of_order(uow, row.id)
    allocation = _allocate(program, order, rewards.definitions(uow, program, held))
    previous = outcome_from_document(row.outcome)
    standing = _standing(
        uow, program, row, held=previous.promotions, held_visit=previous.visit, gains=True
    )
    outcome = evaluate(program, order, allocation, standing, refunded)
    uow.conn.execute(
        sa.update(orders)
        .where(orders.c.id == row.id)
        .values(document=document, line_discounts=dict(allocation.line_discounts))
    )
    _apply_change(uow, _find(uow, row.external_id), outcome, now)


def refund(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> None:
    """Refund lines (or all) of a closed order: re-evaluate on what remains, post the difference."""
    unknown = sorted(set(data) - {"order", "at", "lines", "all"})
    if unknown:
        raise InvalidInput(f"refund: unknown key {unknown[0]}")
    if ("lines" in data) == bool(data.get("all")):
        raise InvalidInput("refund: give lines or all: true")
    wanted: dict[str, int] = {}
    if "lines" in data:
        if not isinstance(data["lines"], list) or not data["lines"]:
            raise InvalidInput("refund.lines: a non-empty list of {line, qty}")
        for i, item in enumerate(data["lines"]):
            if not isinstance(item, Mapping) or set(item) - {"line", "qty"} or "line" not in item:
                raise InvalidInput(f"refund.lines[{i}]: give line and qty")
            qty = item.get("qty")
            if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
                raise InvalidInput(
                    f"refund.lines[{i}].qty: {qty!r} is not a positive whole quantity"
                )
            wanted[str(item["line"])] = wanted.get(str(item["line"]), 0) + qty
    row, _ = _locked(uow, data, now)
    order = order_from_row(row)
    for line_id in wanted:
        if line_id not in order.line_index:
            raise NotFound(f"order {row.external_id} has no line {line_id!r}")
    ORDER.target(row.state, "refund", row.external_id)
    refunded = dict(row.refunded)
    if data.get("all"):
        wanted = {line.id: line.qty - refunded.get(line.id, 0) for line in order.lines}
        wanted = {k: v for k, v in wanted.items() if v > 0}
        if not wanted:
            raise InvalidInput(f"order {row.external_id} is already fully refunded")
    for line_id, qty in wanted.items():
        left = order.line_index[line_id].qty - refunded.get(line_id, 0)
        if qty > left:
            raise InvalidInput(f"line {line_id}: refunding {qty} but only {left} remain")
        refunded[line_id] = refunded.get(line_id, 0) + qty
    program = version_by_id(uow, row.version_id).program
    previous = outcome_from_document(row.outcome)
    standing = _standing(
        uow, program, row, held=previous.promotions, held_visit=previous.visit, gains=False
    )
    allocation = _fixed_allocation(uow, program, row, order)
    outcome = evaluate(program, order, allocation, standing, refunded)
    hot.later(uow.conn, _SET_ORDER, {"b_order": row.id, "refunded": refunded})
    _apply_change(uow, _find(uow, row.external_id), outcome, now)
    uow.record(
        Event("order.refunded", now, {"order": row.external_id, "lines": wanted}, row.member_id)
    )


def void(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> None:
    """Void an order: open, its rewards are released; closed, it is reversed whole."""
    row, _ = _locked(uow, data, now)
    voided = ORDER.target(row.state, "void", row.external_id)
    held = rewards.of_order(uow, row.id)
    if row.state == "closed":
        previous = outcome_from_document(row.outcome)
        nothing = Outcome(0, (), False, previous.visit_day, frozenset(), ("The order was voided.",))
        _apply_change(uow, row, nothing, now, voiding=True)
    hot.later(uow.conn, _SET_ORDER, {"b_order": row.id, "state": voided})
    rewards.move(uow, held, "release" if row.state == "open" else "closed order voided", None, now)
    uow.record(Event("order.voided", now, {"order": row.external_id}, row.member_id))


# Posting's statements are built once: it runs once per order (SQLAlchemy then reuses their
# compiled form cheaply).
_LOCK_MEMBER_OF_ORDER = (
    sa.select(members)
    .where(
        members.c.id
        == sa.select(orders.c.member_id)
        .where(orders.c.id == sa.bindparam("b_order"))
        .scalar_subquery()
    )
    .with_for_update()
)
# The order with its pending lot (an order has at most one), in one round trip.
_ORDER_AND_LOT = (
    sa.select(orders, lots.c.id.label("lot_id"), lots.c.amount.label("lot_amount"))
    .select_from(
        orders.outerjoin(lots, sa.and_(lots.c.order_id == orders.c.id, lots.c.state == "pending"))
    )
    .where(orders.c.id == sa.bindparam("b_order"))
)
_MARK_POSTED = sa.update(orders).where(orders.c.id == sa.bindparam("b_order"))


def post(uow: UnitOfWork, order_pk: int, at: datetime) -> None:
    """Post a closed order's pending effects (due work at close + accrual_delay)."""
    # The member's lock first, then the order as it is under it.
    member = uow.conn.execute(_LOCK_MEMBER_OF_ORDER, {"b_order": order_pk}).one()
    row = uow.conn.execute(_ORDER_AND_LOT, {"b_order": order_pk}).first()
    assert row is not None  # the member was found through it
    if row.post_state != "pending" or row.due_at > at:
        return  # already posted by another run: running it twice changes nothing
    earned = row.lot_amount if row.lot_id is not None else 0
    _post_effects(uow, version_at(uow, at).program, member, row, earned, row.lot_id, at)
    uow.conn.execute(
        _MARK_POSTED,
        {
            "b_order": row.id,
            "post_state": "posted",
            "posted_points": row.points,
            "posted_visit": row.visit,
            "posted_spend": row.spend,
            "posted_window": member.window_start,
            "window_points": row.points,
            "window_visit": int(row.visit),
            "window_spend": row.spend,
        },
    )


def _post_effects(
    uow: UnitOfWork,
    program: Program,
    member: Any,
    row: Any,
    earned: int,
    lot_id: int | None,
    at: datetime,
) -> None:
    """An order's posting on its member: `earned` points as a lot (the pending `lot_id`
    becomes it; none: a new lot), its progress, and what that progress brings."""
    touched = expiring = None
    if earned > 0:
        expiring = points.earn(
            uow,
            program,
            member.id,
            earned,
            at,
            row.id,
            order_ref=row.external_id,
            lot_id=lot_id,
            touch=False,
        )
        touched = points.activity(program, at)
    elif lot_id is not None:
        _withdraw_lot(uow, lot_id)
    state = state_of(member)
    change = add_progress(program, state, row.points, int(row.visit), row.spend)
    _after_change(uow, program, member, state, change, at, also=touched, due=expiring)


def _apply_change(
    uow: UnitOfWork, row: Any, outcome: Outcome, now: datetime, *, voiding: bool = False
) -> None:
    """Apply a re-evaluation: change the pending amounts, or post the difference at once."""
    hot.later(uow.conn, _SET_ORDER, {"b_order": row.id, **_outcome_columns(outcome)})
    _sync_promotions(uow, row, outcome)
    uow.record(Event("order.evaluated", now, _evaluated(uow, row, outcome), row.member_id))
    if row.post_state == "pending":
        found = hot.first(uow.conn, _PENDING_LOT, {"b_order": row.id})
        lot = None if found is None else found.id
        if lot is not None:
            hot.later(uow.conn, points.UPDATE_LOT, {"b_lot": lot, "amount": outcome.points})
        elif outcome.points:
            _pending_lot(uow, row, outcome.points, row.due_at)
        if voiding:  # nothing of a voided order will ever post
            if lot is not None:
                _withdraw_lot(uow, lot)
            hot.later(uow.conn, _SET_ORDER, {"b_order": row.id, "post_state": "withdrawn"})
        return
    if row.post_state != "posted":
        return
    member = member_by_id(uow, row.member_id)
    program = version_at(uow, now).program
    d_points = outcome.points - row.posted_points
    d_visit = int(outcome.visit) - int(row.posted_visit)
    d_spend = outcome.qualifying_spend - row.posted_spend
    if d_points > 0:
        points.earn(uow, program, member.id, d_points, now, row.id, order_ref=row.external_id)
    elif d_points < 0:
        points.claw_back(uow, program, member.id, -d_points, now, row.id, order_ref=row.external_id)
    state = state_of(member)
    added = InWindow(row.posted_window, row.window_points, row.window_visit, row.window_spend)
    added, taken = restate(added, member.window_start, d_points, d_visit, d_spend)
    withdrawn = withdraw(program, state, taken, max(0, -d_visit))
    change = add_progress(program, state, max(0, d_points), max(0, d_visit), max(0, d_spend))
    # A withdrawn visit's punch step is an event too: followers of the timeline keep count.
    change = replace(change, punches=withdrawn.punches + change.punches)
    _after_change(uow, program, member, state, change, now)
    posted = {
        "posted_points": outcome.points,
        "posted_visit": outcome.visit,
        "posted_spend": outcome.qualifying_spend,
        "posted_window": added.start,
        "window_points": added.points,
        "window_visit": added.visit,
        "window_spend": added.spend,
    }
    hot.later(uow.conn, _SET_ORDER, {"b_order": row.id, **posted})


def _after_change(
    uow: UnitOfWork,
    program: Program,
    member: Any,
    state: Any,
    change: Any,
    at: datetime,
    *,
    also: Mapping[str, Any] | None = None,
    due: datetime | None = None,
) -> None:
    save_state(uow, member.id, state, also, due=due)
    for card_id, count in change.punches:
        uow.record(
            Event("punch_card.progressed", at, {"punch_card": card_id, "count": count}, member.id)
        )
    for reward_id in change.rewards:
        rewards.issue(uow, program, member.id, reward_id, at, "punch_card")
    if change.tier_to is not None:
        assert change.tier_from is not None
        if change.reason == "threshold":
            tier_machine(program).check(
                change.tier_from, THRESHOLD, change.tier_to, member.external_id
            )
        record_tier(uow, member.id, at, change.tier_to, change.reason)
        uow.record(
            Event("tier.changed", at, {"from": change.tier_from, "to": change.tier_to}, member.id)
        )


def _standing(
    uow: UnitOfWork,
    program: Program,
    row: Any,
    *,
    held: frozenset[str] = frozenset(),
    held_visit: bool = False,
    gains: bool = True,
) -> Standing:
    uses, visits = _history(uow, program, row.member_id, row.at, other_than=row.id)
    return Standing(
        tier=row.tier,
        promotion_uses=uses,
        other_visits_that_day=visits,
        held_promotions=held,
        held_visit=held_visit,
        gains=gains,
    )


def _history(
    uow: UnitOfWork, program: Program, member_id: int, at: datetime, *, other_than: int | None
) -> tuple[dict[str, int], int]:
    """The member's promotion uses, and visits on the local day of `at`, by other orders: in
    one round trip, and only what the program has a rule for (a promotion limited per member,
    a cap on visits a day); with neither, no read at all."""
    limited = any(p.limit_per_member is not None for p in program.promotions)
    capped = program.visits.max_per_day is not None
    if not (limited or capped):
        return {}, 0
    params = {
        "b_member": member_id,
        "b_other": 0 if other_than is None else other_than,  # no row has id 0
        "b_day": at.astimezone(program.zone).date().isoformat(),
    }
    query = _HISTORY if limited and capped else _PROMOTION_USES if limited else _VISITS_THAT_DAY
    uses: dict[str, int] = {}
    visits = 0
    for promotion, count in hot.rows(uow.conn, query, params):
        if promotion is None:
            visits = int(count)
        else:
            uses[str(promotion)] = int(count)
    return uses, visits


# Built once: every close and quote runs one. A row with no promotion is the visits count.
_PROMOTION_USES = (
    sa.select(promotion_uses.c.promotion_id, sa.func.count())
    .where(
        promotion_uses.c.member_id == sa.bindparam("b_member"),
        promotion_uses.c.order_id != sa.bindparam("b_other"),
    )
    .group_by(promotion_uses.c.promotion_id)
)
_VISITS_THAT_DAY = sa.select(sa.null().label("promotion_id"), sa.func.count()).where(
    orders.c.member_id == sa.bindparam("b_member"),
    orders.c.visit_day == sa.bindparam("b_day"),
    orders.c.visit.is_(True),
    orders.c.state != "voided",
    orders.c.id != sa.bindparam("b_other"),
)
_HISTORY = sa.union_all(_PROMOTION_USES, _VISITS_THAT_DAY)


_UNUSE_PROMOTIONS = sa.delete(promotion_uses).where(
    promotion_uses.c.order_id == sa.bindparam("b_order")
)
_USE_PROMOTION = sa.insert(promotion_uses)


def _sync_promotions(uow: UnitOfWork, row: Any, outcome: Outcome, *, fresh: bool = False) -> None:
    if not fresh:
        hot.later(uow.conn, _UNUSE_PROMOTIONS, {"b_order": row.id})
    for promotion in sorted(outcome.promotions):
        used = {"member_id": row.member_id, "promotion_id": promotion, "order_id": row.id}
        hot.later(uow.conn, _USE_PROMOTION, used)


def _outcome_columns(outcome: Outcome) -> dict[str, Any]:
    return {
        "outcome": outcome_document(outcome),
        "points": outcome.points,
        "spend": outcome.qualifying_spend,
        "visit": outcome.visit,
        "visit_day": outcome.visit_day.isoformat() if outcome.visit else None,
    }


def _evaluated(uow: UnitOfWork, row: Any, outcome: Outcome) -> dict[str, Any]:
    """The order.evaluated event: every figure with its explanation, money with its currency."""
    currency = version_by_id(uow, row.version_id).program.currency
    return {
        "order": row.external_id,
        **outcome_document(outcome),
        "qualifying_spend": {
            "amount": format_money(outcome.qualifying_spend),
            "currency": currency,
        },
    }


def _allocate(program: Program, order: Order, definitions: list[Reward]) -> Allocation:
    try:
        return allocate(program, order, definitions)
    except RewardMatchesNothing as exc:
        raise InvalidInput(str(exc)) from exc


def _fixed_allocation(uow: UnitOfWork, program: Program, row: Any, order: Order) -> Allocation:
    """The discounts fixed at close or at the last edit, which refunds never move (rule 10).
    Allocating again gives its sentences: the same order and rewards give the same discounts.
    Should it not (rows fixed by older code), the fixed figures stand and are listed as such."""
    fixed = dict(row.line_discounts or {})
    try:
        again = allocate(
            program, order, rewards.definitions(uow, program, rewards.of_order(uow, row.id))
        )
    except (RewardMatchesNothing, InvalidInput):
        again = None
    if again is not None and dict(again.line_discounts) == fixed:
        return again
    listed = ", ".join(f"{line} {format_money(cents)}" for line, cents in fixed.items() if cents)
    notes = (f"Discounts fixed earlier stay on the lines: {listed}.",) if listed else ()
    return Allocation(line_discounts=fixed, explanations=notes)


def _pending_lot(uow: UnitOfWork, row: Any, amount: int, due_at: datetime) -> None:
    """Points on their way: a lot that posts at `due_at` (shown as pending until then)."""
    uow.conn.execute(
        points.INSERT_LOT,
        {
            "env_id": uow.env_id,
            "member_id": row.member_id,
            "order_id": row.id,
            "state": POINTS_LOT.initial,
            "amount": amount,
            "remaining": 0,
            "due_at": due_at,
        },
    )


def _withdraw_lot(uow: UnitOfWork, lot_id: int) -> None:
    state = POINTS_LOT.target("pending", "order voided or earns nothing")
    hot.later(uow.conn, points.UPDATE_LOT, {"b_lot": lot_id, "state": state})


_LOCK_MEMBER_OF_REF = (
    sa.select(members, VERSION_DUE)
    .where(
        members.c.id
        == sa.select(orders.c.member_id)
        .where(
            orders.c.env_id == sa.bindparam("b_env"), orders.c.external_id == sa.bindparam("b_ref")
        )
        .scalar_subquery()
    )
    .with_for_update()
)


def _locked(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> tuple[Any, Any]:
    """The order `data` names and its member: the member's lock first, the member's due
    work up to `now` (rule 14), then the order as it is after both. Read before the lock, a
    request that waited for it would act on the order as it was before the request ahead
    of it (a void and a close both succeeding)."""
    ref = as_name(data.get("order"), "order")
    found = {"b_env": uow.env_id, "b_ref": ref, "b_now": now}
    member = hot.first(uow.conn, _LOCK_MEMBER_OF_REF, found)
    if member is None:
        raise NotFound(f"no order {ref!r}")
    if due.catch_up(uow, member.id, now, row=member):
        member = hot.first(uow.conn, _LOCK_MEMBER_OF_REF, found)
    return _find(uow, ref), member  # it exists: its member was found through it


def _posts_now(member: Any, now: datetime) -> bool:
    """Whether an order closing now may post in its closing transaction when its delay has
    passed: only when everything due before it is done (rule 14). Due work that failed and
    waits for the worker, or a version going live the worker has not applied, come first:
    the order then waits, pending, for the worker to post it after them."""
    return not member.version_due and not due.may_be_due(member, now)


def _tier_at(uow: UnitOfWork, member: Any, at: datetime, now: datetime) -> str:
    """The member's tier at `at`: at `now`, the member's row holds it (see `place`)."""
    return str(member.tier) if at == now else tier_at(uow, member.id, at)


_FIND = sa.select(orders).where(
    orders.c.env_id == sa.bindparam("b_env"), orders.c.external_id == sa.bindparam("b_ref")
)


def _find(uow: UnitOfWork, external_id: str) -> Any:
    return hot.first(uow.conn, _FIND, {"b_env": uow.env_id, "b_ref": external_id})


def _get(uow: UnitOfWork, data: Mapping[str, Any]) -> Any:
    ref = as_name(data.get("order"), "order")
    row = _find(uow, ref)
    if row is None:
        raise NotFound(f"no order {ref!r}")
    return row


def _reward_refs(data: Mapping[str, Any]) -> list[str]:
    refs = data.get("rewards") or []
    if not isinstance(refs, list):
        raise InvalidInput("rewards: a list of reward aliases or ids")
    return [as_name(ref, f"rewards[{i}]") for i, ref in enumerate(refs)]


def _parse_new(data: Mapping[str, Any], now: datetime) -> tuple[Order, str, str, list[str]]:
    unknown = sorted(set(data) - PLACE_KEYS)
    if unknown:
        raise InvalidInput(f"order.{unknown[0]}: unknown key")
    order_id = as_name(data.get("id"), "order.id")
    member = as_name(data.get("member"), "order.member")
    at = parse_time(data["at"], "order.at") if data.get("at") is not None else now
    if at > now:
        raise InvalidInput("order.at: an order can not be placed in the future")
    status = data.get("status", "closed")
    if status not in ("open", "closed"):
        raise InvalidInput("order.status: open or closed")
    if "lines" not in data:
        raise InvalidInput("order.lines: an order needs lines")
    try:
        order = Order(id=order_id, at=at, **parse_order_parts(data))
        check_order(order)
    except OrderFormatError as exc:
        raise InvalidInput(str(exc)) from exc
    return order, member, status, _reward_refs(data)


def explanation(uow: UnitOfWork, external_id: str) -> list[str]:
    """Every figure of an order's current outcome, as sentences."""
    row = _get(uow, {"order": external_id})
    if row.outcome is None:
        return [f"Order {external_id} is {row.state}: it earns nothing until it closes."]
    return outcome_from_document(row.outcome).explain()


def view(uow: UnitOfWork, external_id: str) -> dict[str, Any]:
    """An order as the API shows it: its parts, state, outcome and when its effects post."""
    return _view_of(uow, _get(uow, {"order": external_id}))


def _view_of(
    uow: UnitOfWork,
    row: Any,
    *,
    member: str | None = None,
    reward_names: list[str] | None = None,
) -> dict[str, Any]:
    """`view` of a row in hand; the member's id and the reward names are read unless given."""
    program = version_by_id(uow, row.version_id).program
    if member is None:
        member = uow.conn.execute(
            sa.select(members.c.external_id).where(members.c.id == row.member_id)
        ).scalar_one()
    if reward_names is None:
        reward_names = [r.alias or r.reward_id for r in rewards.of_order(uow, row.id)]
    outcome = None if row.outcome is None else outcome_from_document(row.outcome)
    return {
        "id": row.external_id,
        "member": member,
        "state": row.state,
        "placed_at": row.at,
        "program_version": version_by_id(uow, row.version_id).number,
        "tier_at_placement": row.tier,
        "currency": program.currency,
        "document": row.document,
        "refunded": row.refunded,
        "rewards": reward_names,
        "outcome": outcome,
        "posting": {
            "state": row.post_state,
            "due_at": row.due_at,
            "posted_points": row.posted_points,
        },
    }


def quote(uow: UnitOfWork, data: Mapping[str, Any], now: datetime) -> tuple[Outcome, list[str]]:
    """What an order would earn now, and which of the member's rewards would apply. Writes nothing."""
    order, member_ref, _status, refs = _parse_new({**data, "status": "closed"}, now)
    member = load_member(uow, member_ref, lock=False)
    program = version_at(uow, order.at).program
    chosen = rewards.resolve(uow, program, member.id, refs, now)
    allocation = _allocate(program, order, rewards.definitions(uow, program, chosen))
    uses, visits = _history(uow, program, member.id, order.at, other_than=None)
    standing = Standing(
        tier=_tier_at(uow, member, order.at, now),
        promotion_uses=uses,
        other_visits_that_day=visits,
    )
    outcome = evaluate(program, order, allocation, standing)
    applicable = []
    for row in rewards.available(uow, member.id, now):
        try:
            allocate(program, order, rewards.definitions(uow, program, [row]))
        except (RewardMatchesNothing, InvalidInput):
            continue
        applicable.append(row.alias or row.reward_id)
    return outcome, applicable
