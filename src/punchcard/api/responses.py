"""The shapes of successful answers, for the OpenAPI document only.

Routes build their JSON in `views.py` and return it directly, so these models cost nothing
per request; they exist so integrators can generate typed clients, and so the schemathesis
suite checks every 2xx body against a declared shape (extra keys refused).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


@cache
def written(shape: type[Shape]) -> type[Shape]:
    """The shape as a write answers it: with the token a later read can wait for."""
    token = Field(description="Pass to a read (query or header) to see this write")
    return create_model(f"{shape.__name__}Written", __base__=shape, consistency_token=(str, token))


class Money(Shape):
    amount: str = Field(description="Decimal, in the currency's major unit", examples=["9.50"])
    currency: str


# Members and rewards ----------------------------------------------------------------------


class PendingItem(Shape):
    order: str | None
    points: int
    expected_at: str | None = Field(description="When these points post")


class Balance(Shape):
    member: str
    posted: int
    pending: int
    available: int
    pending_items: list[PendingItem]
    consistent: bool


class Member(Shape):
    id: str
    tier: str
    visits: int
    punch_cards: dict[str, int]
    rewards: dict[str, list[str]] = Field(description="Held rewards by state")
    points: Balance
    consistent: bool


class TimelineEvent(Shape):
    seq: int
    type: str
    at: str | None
    data: dict[str, Any]


class Timeline(Shape):
    events: list[TimelineEvent]
    next_cursor: str | None
    consistent: bool


class HeldReward(Shape):
    reward: str
    alias: str | None
    state: str
    issued_at: str | None
    expires_at: str | None
    source: str


class HeldRewards(Shape):
    rewards: list[HeldReward]
    next_cursor: str | None
    consistent: bool


class PointsTransfer(Shape):
    id: str
    points: int
    paid_debt: int
    from_: Balance = Field(alias="from")
    to: Balance


class FreeItem(Shape):
    skus: list[str]
    categories: list[str]


class FreeItemOff(Shape):
    free_item: FreeItem
    max_value: Money | None


class AmountOff(Shape):
    amount_off: Money


class PercentOff(Shape):
    percent_off: str


class CatalogueReward(Shape):
    id: str
    cost: int
    valid_days: int
    discount: FreeItemOff | AmountOff | PercentOff


class Catalogue(Shape):
    rewards: list[CatalogueReward]


# Orders -----------------------------------------------------------------------------------


class Award(Shape):
    rule: str
    points: int
    explanation: str


class Outcome(Shape):
    points: int
    qualifying_spend: Money | None
    visit: bool
    promotions: list[str]
    awards: list[Award]
    explanation: list[str]


class Quote(Shape):
    outcome: Outcome | None
    applicable_rewards: list[str]


class OrderModifier(Shape):
    sku: str
    category: str
    qty: int
    unit_price: Money


class OrderLine(Shape):
    id: str
    sku: str
    category: str
    qty: int
    refunded_qty: int
    unit_price: Money | None
    kind: str = Field(description="item or gift_card")
    modifiers: list[OrderModifier]


class OrderDiscount(Shape):
    amount: Money
    line: str | None = Field(description="The line it applies to; none: the whole order")


class OrderTender(Shape):
    type: str
    amount: Money
    gift_card: str | None


class Posting(Shape):
    state: str
    expected_at: str | None
    posted_points: int


class Order(Shape):
    id: str
    member: str
    state: str
    placed_at: str | None
    program_version: int
    tier_at_placement: str
    lines: list[OrderLine]
    discounts: list[OrderDiscount]
    tax: Money
    tip: Money
    fees: Money
    tenders: list[OrderTender]
    rewards: list[str]
    outcome: Outcome | None
    posting: Posting


class OrderRead(Order):
    consistent: bool


# Gift cards -------------------------------------------------------------------------------


class GiftCard(Shape):
    id: str
    balance: Money
    last_approved: Money | None


class GiftCardRead(GiftCard):
    consistent: bool


class IssuedGiftCard(GiftCard):
    number: str = Field(description="Shown in this answer only")
    pin: str = Field(description="Shown in this answer only")


class CardMoved(GiftCard):
    approved: Money | None = Field(None, description="What a redemption took")


class Hold(Shape):
    id: str
    card: str
    state: str
    amount: Money
    captured: Money | None
    expires_at: str
    card_balance: Money


class Authorized(GiftCard):
    approved: Money
    hold: Hold


class CardTransfer(Shape):
    id: str
    amount: Money
    from_: GiftCard = Field(alias="from")
    to: GiftCard


class Balances(Shape):
    members: list[Balance]
    gift_cards: list[GiftCard]
    consistent: bool


# Programs, sandboxes, clock ----------------------------------------------------------------


class Version(Shape):
    version: int
    program: str
    live_from: str | None


class Versions(Shape):
    versions: list[Version]


class VersionsPage(Versions):
    next_cursor: str | None


class Sandbox(Shape):
    id: str
    name: str
    key: str = Field(description="The sandbox's admin key, shown in this answer only")
    clock: str


class ClockMoved(Shape):
    id: str
    clock: str
    work_done: int


class Clock(Shape):
    now: str
    movable: bool


class Consistency(Shape):
    consistent: bool


class Ready(Shape):
    status: str


# Webhooks and inbound ----------------------------------------------------------------------


class Endpoint(Shape):
    id: str
    url: str
    event_types: list[str]
    state: str
    disabled_reason: str | None
    failing_since: str | None
    secrets: int = Field(description="How many secrets sign now (two after a rotation)")


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="Shown in this answer only")


class Endpoints(Shape):
    endpoints: list[Endpoint]


class Attempt(Shape):
    message: str
    at: str
    status: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None


class Attempts(Shape):
    attempts: list[Attempt]
    next_cursor: str | None


class DeadLetter(Shape):
    message: str
    type: str
    attempts: int
    dead_at: str


class DeadLetters(Shape):
    messages: list[DeadLetter]


class Requeued(Shape):
    requeued: int


class InboundSource(Shape):
    id: str
    mapping: str
    secret: str = Field(description="Shown in this answer only")
    url: str


class InboundEvent(Shape):
    event: str
    state: str
    attempts: int
    outcome: str | None
    received_at: str


class InboundEvents(Shape):
    events: list[InboundEvent]


class Received(Shape):
    received: bool
    duplicate: bool
