"""The /v1 resources: members, orders, rewards, gift cards, programs, sandboxes and the clock."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from math import ceil
from typing import Any, TypeVar

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse, Response

from punchcard.api import responses, views
from punchcard.api.context import Call, consistency_token, idempotent, wait_consistent, write
from punchcard.api.guard import GuardedRoute, needs
from punchcard.api.problems import ApiProblem
from punchcard.api.schemas import (
    ActivateBody,
    AmountBody,
    CaptureBody,
    CardTransferBody,
    ClockBody,
    EnrollBody,
    GiftCardBody,
    HoldBody,
    InquiryBody,
    OrderBody,
    OrderParts,
    PointsTransferBody,
    ProgramBody,
    RedeemBody,
    RefundBody,
    SandboxBody,
)
from punchcard.engine.durations import parse_duration
from punchcard.errors import InvalidInput, InvalidState
from punchcard.ledger import store as ledger
from punchcard.lifecycle.machines import diagram
from punchcard.services import gift_cards, members, orders, programs, rewards, tenants
from punchcard.services.context import load_member, version_at
from punchcard.store.database import reading
from punchcard.store.uow import UnitOfWork
from punchcard.worker.due_work import Held, SandboxBusy, move_held, sandbox_lease

router = APIRouter(prefix="/v1", route_class=GuardedRoute)
T = TypeVar("T")


def _read(c: Call, query: Callable[[UnitOfWork, datetime], T]) -> T:
    now = c.now()
    with c.uow(read_only=True) as uow:
        return query(uow, now)


async def read(c: Call, query: Callable[[UnitOfWork, datetime, bool], Any]) -> JSONResponse:
    """A read: waits for a consistency token if given, then answers (the scope was checked
    before the route ran)."""
    consistent = await wait_consistent(c)
    result = await run_in_threadpool(_read, c, lambda uow, now: query(uow, now, consistent))
    return JSONResponse(result)


def _cursor(value: str | None) -> int:
    if not value:
        return 0
    try:
        position = int(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode())
    except ValueError as exc:
        raise ApiProblem(422, "invalid_input", "cursor is not one this API gave") from exc
    if not 0 <= position < 2**62:
        raise ApiProblem(422, "invalid_input", "cursor is not one this API gave")
    return position


def _next_cursor(position: int | None) -> str | None:
    return (
        None
        if position is None
        else base64.urlsafe_b64encode(str(position).encode()).decode().rstrip("=")
    )


# Members ---------------------------------------------------------------------------------


@router.post(
    "/members",
    operation_id="enrollMember",
    status_code=201,
    tags=["members"],
    response_model=responses.written(responses.Member),
)
def enroll(body: EnrollBody, c: Call = needs("members:write")) -> Response:
    data = {"member": body.id, **body.model_dump(exclude={"id"})}
    return write(
        c,
        lambda uow, now: members.enroll(uow, data, now),
        lambda _, uow, now: views.member(members.view(uow, body.id, now)),
        status=201,
    )


@router.get(
    "/members/{member_id}",
    operation_id="getMember",
    tags=["members"],
    response_model=responses.Member,
)
async def get_member(member_id: str, c: Call = needs("members:read")) -> Response:
    return await read(c, lambda uow, now, ok: views.member(members.view(uow, member_id, now), ok))


@router.get(
    "/members/{member_id}/balance",
    operation_id="getMemberBalance",
    tags=["members"],
    response_model=responses.Balance,
)
async def get_balance(member_id: str, c: Call = needs("members:read")) -> Response:
    return await read(c, lambda uow, now, ok: views.balance(members.view(uow, member_id, now), ok))


@router.get(
    "/members/{member_id}/timeline",
    operation_id="getMemberTimeline",
    tags=["members"],
    response_model=responses.Timeline,
)
async def get_timeline(
    member_id: str,
    c: Call = needs("members:read"),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> Response:
    def page(uow: UnitOfWork, _now: datetime, ok: bool) -> dict[str, Any]:
        rows = members.timeline(uow, member_id, _cursor(cursor), limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "events": [
                {
                    "seq": r.member_seq,
                    "type": r.type,
                    "at": views.when(r.created_at),
                    "data": r.payload,
                }
                for r in rows
            ],
            "next_cursor": _next_cursor(rows[-1].member_seq) if more else None,
            "consistent": ok,
        }

    return await read(c, page)


@router.get(
    "/members/{member_id}/rewards",
    operation_id="listMemberRewards",
    tags=["rewards"],
    response_model=responses.HeldRewards,
)
async def member_rewards(
    member_id: str,
    c: Call = needs("members:read"),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> Response:
    def held(uow: UnitOfWork, _now: datetime, ok: bool) -> dict[str, Any]:
        member = load_member(uow, member_id, lock=False)
        rows = rewards.held_by(uow, member.id, after=_cursor(cursor), limit=limit + 1)
        page = rows[:limit]
        return {
            "rewards": [
                {
                    "reward": r.reward_id,
                    "alias": r.alias,
                    "state": r.state,
                    "issued_at": views.when(r.issued_at),
                    "expires_at": views.when(r.expires_at),
                    "source": r.source,
                }
                for r in page
            ],
            "next_cursor": _next_cursor(page[-1].id) if len(rows) > limit else None,
            "consistent": ok,
        }

    return await read(c, held)


@router.post(
    "/members/{member_id}/rewards",
    operation_id="redeemReward",
    status_code=201,
    tags=["rewards"],
    response_model=responses.written(responses.Member),
)
def redeem_reward(member_id: str, body: RedeemBody, c: Call = needs("rewards:write")) -> Response:
    data = {"member": member_id, "reward": body.reward, "as": body.alias}
    return write(
        c,
        lambda uow, now: rewards.redeem(uow, data, now),
        lambda _, uow, now: views.member(members.view(uow, member_id, now)),
        status=201,
    )


@router.post(
    "/members/{member_id}/points/transfers",
    operation_id="transferPoints",
    status_code=201,
    tags=["members"],
    response_model=responses.written(responses.PointsTransfer),
)
def transfer_points(
    member_id: str, body: PointsTransferBody, c: Call = needs("members:write")
) -> Response:
    """Move posted points to another member; each part keeps its expiry (docs/api.md)."""
    data = {"member": member_id, "to": body.to, "points": body.points}

    def render(moved: members.PointsTransfer, uow: UnitOfWork, now: datetime) -> dict[str, Any]:
        source, target = members.balances(uow, [moved.source, moved.target], now)
        return views.points_transfer(moved, source, target)

    return write(
        c,
        lambda uow, now: members.transfer_points(uow, data, now),
        render,
        status=201,
    )


@router.get(
    "/balances",
    operation_id="getBalances",
    tags=["members", "gift cards"],
    response_model=responses.Balances,
)
async def get_balances(
    c: Call = needs(per_query={"member": "members:read", "gift_card": "gift_cards:read"}),
    member: list[str] = Query([], description="A member id; repeat for each (at most 100 ids)"),
    gift_card: list[str] = Query([], description="A gift card id; repeat for each"),
) -> Response:
    """Members' points and gift cards' balances read in one snapshot: their totals add up."""
    if not member and not gift_card:
        raise InvalidInput("name at least one member or gift_card")
    if len(member) + len(gift_card) > gift_cards.MAX_BATCH:
        raise InvalidInput(f"at most {gift_cards.MAX_BATCH} ids in one read")

    def both(uow: UnitOfWork, now: datetime, ok: bool) -> dict[str, Any]:
        ledger.snapshot(uow.conn)  # first: every read below sees the same moment
        member_ids = gift_cards.names(member, "member") if member else []
        card_ids = gift_cards.names(gift_card, "gift_card") if gift_card else []
        return {
            "members": [views.balance(v, ok) for v in members.balances(uow, member_ids, now)]
            if member_ids
            else [],
            "gift_cards": [views.gift_card(v) for v in gift_cards.views(uow, card_ids)]
            if card_ids
            else [],
            "consistent": ok,
        }

    return await read(c, both)


@router.get(
    "/rewards", operation_id="listRewards", tags=["rewards"], response_model=responses.Catalogue
)
async def catalogue(c: Call = needs("members:read")) -> Response:
    def listing(uow: UnitOfWork, now: datetime, _ok: bool) -> dict[str, Any]:
        program = version_at(uow, now).program
        return {
            "rewards": [
                {
                    "id": r.id,
                    "cost": r.cost,
                    "valid_days": r.valid_days,
                    "discount": views.discount(r.discount, program.currency),
                }
                for r in program.rewards
            ]
        }

    return await read(c, listing)


# Orders ----------------------------------------------------------------------------------


def _order_data(body: OrderParts) -> dict[str, Any]:
    return body.model_dump(exclude_none=True)


@router.post(
    "/orders/quote",
    operation_id="quoteOrder",
    tags=["orders"],
    response_model=responses.written(responses.Quote),
)
def quote(body: OrderBody, c: Call = needs("orders:read")) -> Response:
    """What the order would earn and which of the member's rewards apply; changes nothing."""

    def render(result: Any, uow: UnitOfWork, now: datetime) -> dict[str, Any]:
        outcome, applicable = result
        currency = version_at(uow, now).program.currency
        return {"outcome": views.outcome(outcome, currency), "applicable_rewards": applicable}

    return write(c, lambda uow, now: orders.quote(uow, _order_data(body), now), render)


@router.post(
    "/orders",
    operation_id="placeOrder",
    status_code=201,
    tags=["orders"],
    response_model=responses.written(responses.Order),
)
def place_order(body: OrderBody, c: Call = needs("orders:write")) -> Response:
    return write(
        c,
        lambda uow, now: orders.place(uow, _order_data(body), now),
        lambda placed, _uow, _now: views.order(placed),
        status=201,
    )


@router.get(
    "/orders/{order_id}",
    operation_id="getOrder",
    tags=["orders"],
    response_model=responses.OrderRead,
)
async def get_order(order_id: str, c: Call = needs("orders:read")) -> Response:
    return await read(
        c,
        lambda uow, now, ok: {**views.order(orders.view(uow, order_id)), "consistent": ok},
    )


def _order_write(
    c: Call,
    order_id: str,
    use_case: Callable[[UnitOfWork, dict[str, Any], datetime], None],
    data: dict[str, Any],
    status: int = 200,
) -> Response:
    payload = {**data, "order": order_id}
    return write(
        c,
        lambda uow, now: use_case(uow, payload, now),
        lambda _, uow, now: views.order(orders.view(uow, order_id)),
        status=status,
    )


@router.post(
    "/orders/{order_id}/close",
    operation_id="closeOrder",
    tags=["orders"],
    response_model=responses.written(responses.Order),
)
def close_order(order_id: str, c: Call = needs("orders:write")) -> Response:
    return _order_write(c, order_id, orders.close, {})


@router.patch(
    "/orders/{order_id}",
    operation_id="editOrder",
    tags=["orders"],
    response_model=responses.written(responses.Order),
)
def edit_order(order_id: str, body: OrderParts, c: Call = needs("orders:write")) -> Response:
    return _order_write(c, order_id, orders.edit, _order_data(body))


@router.post(
    "/orders/{order_id}/refunds",
    operation_id="refundOrder",
    status_code=201,
    tags=["orders"],
    response_model=responses.written(responses.Order),
)
def refund_order(order_id: str, body: RefundBody, c: Call = needs("orders:write")) -> Response:
    data: dict[str, Any] = {"all": True} if body.all else {}
    if body.lines is not None:
        data["lines"] = [line.model_dump() for line in body.lines]
    return _order_write(c, order_id, orders.refund, data, status=201)


@router.post(
    "/orders/{order_id}/void",
    operation_id="voidOrder",
    tags=["orders"],
    response_model=responses.written(responses.Order),
)
def void_order(order_id: str, c: Call = needs("orders:write")) -> Response:
    return _order_write(c, order_id, orders.void, {})


# Gift cards ------------------------------------------------------------------------------


@router.post(
    "/gift-cards",
    operation_id="issueGiftCard",
    status_code=201,
    tags=["gift cards"],
    response_model=responses.written(responses.IssuedGiftCard),
)
def issue_gift_card(body: GiftCardBody, c: Call = needs("gift_cards:write")) -> Response:
    def render(issued: gift_cards.IssuedCard, uow: UnitOfWork, _now: datetime) -> dict[str, Any]:
        # The number and PIN are in this response only (and in its idempotent replay).
        return {
            **views.gift_card(gift_cards.view(uow, issued.card)),
            "number": issued.number,
            "pin": issued.pin,
        }

    return write(
        c,
        lambda uow, now: gift_cards.issue(uow, body.id, body.model_dump(), now),
        render,
        status=201,
    )


@router.post(
    "/gift-cards/inquiries",
    operation_id="inquireGiftCardBalance",
    tags=["gift cards"],
    response_model=responses.written(responses.GiftCard),
)
def inquire(body: InquiryBody, request: Request, c: Call = needs("gift_cards:read")) -> Response:
    """Balance by number and PIN; unknown card and wrong PIN are answered alike. An inquiry
    counts against the key's limit when it runs: a replay of one does not."""

    def admit() -> None:
        wait_s = request.app.state.inquiries.take(c.engine, c.principal.key_id, c.env_id)
        if wait_s:
            raise ApiProblem(
                429,
                "rate_limited",
                "too many balance inquiries",
                {"Retry-After": str(ceil(wait_s))},
            )

    return write(
        c,
        lambda uow, now: gift_cards.inquire(uow, body.number, body.pin, now),
        lambda card, _uow, _now: views.gift_card(card),
        admit=admit,
    )


@router.get(
    "/gift-cards/{card_id}",
    operation_id="getGiftCard",
    tags=["gift cards"],
    response_model=responses.GiftCardRead,
)
async def get_gift_card(card_id: str, c: Call = needs("gift_cards:read")) -> Response:
    return await read(
        c,
        lambda uow, _now, ok: {**views.gift_card(gift_cards.view(uow, card_id)), "consistent": ok},
    )


def _card_write(c: Call, card_id: str, use_case: Callable[[UnitOfWork, datetime], Any]) -> Response:
    def render(approved: Any, uow: UnitOfWork, _now: datetime) -> dict[str, Any]:
        view = gift_cards.view(uow, card_id)
        out = views.gift_card(view)
        if isinstance(approved, int):
            out["approved"] = views.money(approved, view.currency)
        return out

    return write(c, use_case, render)


@router.post(
    "/gift-cards/{card_id}/reload",
    operation_id="reloadGiftCard",
    tags=["gift cards"],
    response_model=responses.written(responses.CardMoved),
)
def reload_gift_card(
    card_id: str, body: AmountBody, c: Call = needs("gift_cards:write")
) -> Response:
    return _card_write(
        c, card_id, lambda uow, now: gift_cards.reload(uow, card_id, body.model_dump(), now)
    )


@router.post(
    "/gift-cards/{card_id}/redeem",
    operation_id="redeemGiftCard",
    tags=["gift cards"],
    response_model=responses.written(responses.CardMoved),
)
def redeem_gift_card(
    card_id: str, body: AmountBody, c: Call = needs("gift_cards:write")
) -> Response:
    return _card_write(
        c, card_id, lambda uow, now: gift_cards.redeem(uow, card_id, body.model_dump(), now)
    )


@router.post(
    "/gift-cards/{card_id}/transfers",
    operation_id="transferGiftCardValue",
    status_code=201,
    tags=["gift cards"],
    response_model=responses.written(responses.CardTransfer),
)
def transfer_gift_card(
    card_id: str, body: CardTransferBody, c: Call = needs("gift_cards:write")
) -> Response:
    """Move money to another card of the same currency (consolidating cards), all or nothing."""
    data = {"to": body.to, "amount": body.amount}

    def render(moved: gift_cards.Transfer, uow: UnitOfWork, _now: datetime) -> dict[str, Any]:
        source, target = gift_cards.views(uow, [moved.source, moved.target])
        return views.card_transfer(moved, source, target)

    return write(
        c,
        lambda uow, now: gift_cards.transfer_value(uow, card_id, data, now),
        render,
        status=201,
    )


@router.post(
    "/gift-cards/{card_id}/holds",
    operation_id="authorizeGiftCard",
    status_code=201,
    tags=["gift cards"],
    response_model=responses.written(responses.Authorized),
)
def authorize_gift_card(
    card_id: str, body: HoldBody, c: Call = needs("gift_cards:write")
) -> Response:
    data = {"amount": body.amount, "partial": body.partial, "hold": body.id}

    def render(approved: int, uow: UnitOfWork, _now: datetime) -> dict[str, Any]:
        view = gift_cards.view(uow, card_id)
        return {
            **views.gift_card(view),
            "approved": views.money(approved, view.currency),
            "hold": gift_cards.last_hold(uow, card_id),
        }

    return write(
        c,
        lambda uow, now: gift_cards.authorize(uow, card_id, data, now),
        render,
        status=201,
    )


@router.post(
    "/gift-cards/holds/{hold_id}/capture",
    operation_id="captureHold",
    tags=["gift cards"],
    response_model=responses.written(responses.Hold),
)
def capture_hold(hold_id: str, body: CaptureBody, c: Call = needs("gift_cards:write")) -> Response:
    return write(
        c,
        lambda uow, now: gift_cards.capture(uow, hold_id, body.model_dump(), now),
        lambda captured, uow, _now: gift_cards.hold_view(uow, hold_id),
    )


@router.post(
    "/gift-cards/holds/{hold_id}/void",
    operation_id="voidHold",
    tags=["gift cards"],
    response_model=responses.written(responses.Hold),
)
def void_hold(hold_id: str, c: Call = needs("gift_cards:write")) -> Response:
    return write(
        c,
        lambda uow, now: gift_cards.void(uow, hold_id, now),
        lambda _, uow, _now: gift_cards.hold_view(uow, hold_id),
    )


# Programs --------------------------------------------------------------------------------


@router.post(
    "/programs/versions",
    operation_id="publishProgram",
    status_code=201,
    tags=["programs"],
    response_model=responses.written(responses.Versions),
)
def upload_program(body: ProgramBody, c: Call = needs("programs:write")) -> Response:
    def use_case(uow: UnitOfWork, now: datetime) -> int:
        live_from = (body.live_from or now) if body.activate else None
        return programs.publish(uow, body.source, now, live_from=live_from)

    return write(c, use_case, lambda _, uow, _now: {"versions": _versions(uow)}, status=201)


def _versions(uow: UnitOfWork, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    return [
        {"version": v.version, "program": v.program_id, "live_from": views.when(v.live_from)}
        for v in programs.versions(uow, after=after, limit=limit)
    ]


@router.get(
    "/programs/versions",
    operation_id="listProgramVersions",
    tags=["programs"],
    response_model=responses.VersionsPage,
)
async def list_versions(
    c: Call = needs("programs:read"),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> Response:
    def page(uow: UnitOfWork, _now: datetime, _ok: bool) -> dict[str, Any]:
        rows = _versions(uow, after=_cursor(cursor), limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "versions": rows,
            "next_cursor": _next_cursor(rows[-1]["version"]) if more else None,
        }

    return await read(c, page)


@router.post(
    "/programs/versions/{number}/activate",
    operation_id="activateProgramVersion",
    tags=["programs"],
    response_model=responses.written(responses.Versions),
)
def activate_version(
    body: ActivateBody, number: int = Path(ge=1, lt=2**31), c: Call = needs("programs:write")
) -> Response:
    return write(
        c,
        lambda uow, now: programs.activate(uow, number, body.at or now, now),
        lambda _, uow, _now: {"versions": _versions(uow)},
    )


@router.get(
    "/programs/diagrams/{name}",
    operation_id="getDiagram",
    tags=["programs"],
    response_class=PlainTextResponse,
)
def get_diagram(name: str, c: Call = needs("programs:read")) -> Response:
    program = _read(c, lambda uow, now: version_at(uow, now).program) if name == "tier" else None
    try:
        return PlainTextResponse(diagram(name, program))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


# Sandboxes and the clock -----------------------------------------------------------------


@router.post(
    "/sandboxes",
    operation_id="createSandbox",
    status_code=201,
    tags=["sandboxes"],
    response_model=responses.written(responses.Sandbox),
)
def create_sandbox(body: SandboxBody, c: Call = needs("sandboxes:write")) -> Response:
    if body.name in ("live", "sandbox"):
        raise InvalidInput("name: live and sandbox are the tenant's own environments")
    return write(
        c,
        lambda uow, now: tenants.create_sandbox(
            uow.conn, c.principal, body.name, body.start, now, copy_programs=body.copy_programs
        ),
        lambda created, _uow, _now: {**created, "clock": body.start.isoformat()},
        status=201,
    )


@router.delete(
    "/sandboxes/{sandbox_id}", operation_id="deleteSandbox", status_code=204, tags=["sandboxes"]
)
def delete_sandbox(sandbox_id: str, c: Call = needs("sandboxes:write")) -> Response:
    with c.engine.begin() as conn:
        tenants.delete_sandbox(conn, c.principal, sandbox_id, c.clock.now())
    return Response(status_code=204)


MAX_CLOCK_MOVE = timedelta(days=3660)  # ten years


def _sandbox_now(c: Call, env_id: str) -> datetime:
    """A sandbox's own clock. The tenant's `sandbox` runs on the wall clock, like live, and
    keeps doing so: moving it would stop it for everyone testing there, for good."""
    with reading(c.engine) as conn:
        row = tenants.sandbox_row(conn, c.principal, env_id)
    if row.clock is None:
        raise InvalidState(
            "this sandbox runs on the wall clock, like live; make a named sandbox "
            "(POST /v1/sandboxes) to move time"
        )
    clock: datetime = row.clock
    return clock


def _clock_plan(c: Call, env_id: str, body: ClockBody) -> dict[str, Any]:
    """Where the clock goes: `advance` is resolved against the clock as it is now, once, so a
    retry after a crash moves it to the same time instead of advancing it again."""
    current = _sandbox_now(c, env_id)
    if (body.to is None) == (body.advance is None):
        raise InvalidInput("give to or advance")
    if body.to is not None:
        return {"to": body.to.isoformat()}
    try:
        target = current + parse_duration(body.advance or "")
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"advance: {exc}") from exc
    return {"to": target.isoformat()}


def _move(c: Call, env_id: str, plan: dict[str, Any], resumed: bool, held: Held) -> dict[str, Any]:
    current = _sandbox_now(c, env_id)
    target = datetime.fromisoformat(plan["to"])
    if target.year > 9000:
        raise InvalidInput("the clock can not go past the year 9000")
    if resumed and target <= current:
        # A retry of a move that was made (and perhaps overtaken by another since) before
        # its answer was stored: it is done, not a move back.
        done = 0
    elif target < current:
        raise InvalidInput("the clock never moves back")
    elif target - current > MAX_CLOCK_MOVE:
        # All due work on the way is done in this request: bound it, as a request is bounded.
        raise InvalidInput(f"the clock moves at most {MAX_CLOCK_MOVE.days} days at a time")
    else:
        done = move_held(c.engine, env_id, target, held)
    return {
        "id": env_id,
        "clock": target.isoformat(),
        "work_done": done,
        "consistency_token": consistency_token(env_id, target),
    }


@router.post(
    "/sandboxes/{sandbox_id}/clock",
    operation_id="moveSandboxClock",
    tags=["sandboxes"],
    response_model=responses.written(responses.ClockMoved),
)
def move_sandbox_clock(
    sandbox_id: str, body: ClockBody, c: Call = needs("sandboxes:write")
) -> Response:
    """Move a sandbox's clock forward, doing all the due work on the way."""
    return _move_clock(c, sandbox_id, body)


@router.post(
    "/clock",
    operation_id="moveClock",
    tags=["sandboxes"],
    response_model=responses.written(responses.ClockMoved),
)
def move_own_clock(body: ClockBody, c: Call = needs("sandboxes:write")) -> Response:
    """Move this sandbox's own clock (a live key gets invalid_state: live has no movable clock)."""
    if c.principal.env_kind == "live":
        raise InvalidState("live has no movable clock")
    return _move_clock(c, c.env_id, body)


def _move_clock(c: Call, env_id: str, body: ClockBody) -> Response:
    """Under the sandbox's lease from plan to answer: a second move (another key) plans
    against the clock the first left, and a retry that took over a slow move's key waits
    for it, then carries out the same stored plan."""
    lease: list[Held] = []

    @contextmanager
    def holding() -> Iterator[None]:
        _sandbox_now(c, env_id)  # one this key may move, that exists, before waiting for it
        try:
            with sandbox_lease(c.engine, env_id, c.clock) as held:
                lease.append(held)
                yield
        except SandboxBusy as busy:
            raise ApiProblem(409, "sandbox_busy", str(busy), {"Retry-After": "1"}) from busy

    return idempotent(
        c,
        lambda: _clock_plan(c, env_id, body),
        lambda plan, resumed: (200, _move(c, env_id, plan, resumed, lease[0])),
        holding,
    )


@router.get(
    "/consistency",
    operation_id="waitForConsistency",
    tags=["consistency"],
    response_model=responses.Consistency,
)
async def consistency(c: Call = needs()) -> Response:
    """Wait (up to wait_ms) until the read side includes the write of `consistency_token`."""
    return JSONResponse({"consistent": await wait_consistent(c)})


@router.get("/clock", operation_id="getClock", tags=["sandboxes"], response_model=responses.Clock)
def get_clock(c: Call = needs()) -> Response:
    return JSONResponse({"now": c.now().isoformat(), "movable": c.principal.env_clock is not None})


def health_router(engine_getter: Callable[[], sa.Engine]) -> APIRouter:
    health = APIRouter(tags=["health"])

    @health.get("/healthz", operation_id="getHealth")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @health.get(
        "/readyz",
        operation_id="getReadiness",
        response_model=responses.Ready,
        responses={503: {"description": "The database is unreachable", "model": responses.Ready}},
    )
    def readyz() -> Response:
        try:
            with engine_getter().connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.SQLAlchemyError:
            return JSONResponse({"status": "database unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    return health
