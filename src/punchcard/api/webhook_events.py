"""The outbound webhook events, for the OpenAPI document's top-level `webhooks` section.

Each event type's `data` as the use cases record it, plus `member` and `member_seq` on a
member's events (added when the outbox row becomes a message, `services/webhooks.py`). Like
`responses.py`, these shapes cost nothing per event: they tell receivers, and client
generators, what arrives; tests/e2e/test_openapi_in_use.py holds them to what is sent.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field
from pydantic.json_schema import models_json_schema

from punchcard.api.responses import Award, Money, Shape
from punchcard.services.webhooks import EVENT_TYPES

SCHEMA_REF = "#/components/schemas/{model}"


class MemberEvent(Shape):
    member: str = Field(description="The member's id")
    member_seq: int = Field(
        description="The member's events numbered 1, 2, 3, ... in the order they happened"
    )


class MemberEnrolled(MemberEvent):
    tier: str


class OrderEvaluated(MemberEvent):
    order: str
    points: int = Field(description="What the order earns now, in all")
    qualifying_spend: Money
    visit: bool
    visit_day: date
    promotions: list[str]
    awards: list[Award]
    notes: list[str]


class OrderRefunded(MemberEvent):
    order: str
    lines: dict[str, int] = Field(description="The quantity refunded now, by line id")


class OrderVoided(MemberEvent):
    order: str


class PointsPending(MemberEvent):
    order: str
    points: int
    due_at: datetime = Field(description="When they post")


class PointsPosted(MemberEvent):
    order: str
    points: int
    paid_debt: int = Field(description="How many of them paid a debt first")


class PointsReversed(MemberEvent):
    order: str
    points: int
    debt: int = Field(description="What the member's points could not cover, owed")
    dropped: int = Field(
        description="What they could not cover, forgiven (negative_balance: clamp)"
    )


class PointsExpired(MemberEvent):
    points: int
    reason: Literal["months_after_earn", "inactivity"]


class PointsTransferred(MemberEvent):
    transfer: str
    from_: str = Field(alias="from", description="The giving member")
    to: str = Field(description="The receiving member")
    points: int
    paid_debt: int | None = Field(
        None, description="On the receiving member's event only: how many paid its debt"
    )


class TierChanged(MemberEvent):
    from_: str = Field(alias="from")
    to: str


class RewardIssued(MemberEvent):
    reward: str
    alias: str | None
    source: Literal["redeem", "punch_card"]


class RewardRedeemed(MemberEvent):
    reward: str
    points: int = Field(description="The points it cost")


class RewardMoved(MemberEvent):
    reward: str
    alias: str | None


class PunchCardProgressed(MemberEvent):
    punch_card: str
    count: int = Field(description="Punches on the card now, after any reward it completed")


class GiftCardChanged(Shape):
    card: str
    change: Literal[
        "issued", "reloaded", "redeemed", "authorized", "captured", "voided", "released"
    ]
    amount: str = Field(description="Decimal, in the currency's major unit", examples=["9.50"])
    balance: str = Field(description="The card's balance after it, holds taken off")
    currency: str


class CardBalance(Shape):
    card: str
    balance: str


class GiftCardTransferred(Shape):
    transfer: str
    amount: str = Field(description="Decimal, in the currency's major unit", examples=["9.50"])
    currency: str
    from_: CardBalance = Field(alias="from")
    to: CardBalance


class ProgramPublished(Shape):
    program: str
    version: int


class ProgramActivated(Shape):
    version: int
    live_from: datetime


# Each event type: what it reports, and its data's shape.
EVENTS: dict[str, tuple[str, type[Shape]]] = {
    "member.enrolled": ("A member was enrolled", MemberEnrolled),
    "order.evaluated": ("An order was closed or changed, and evaluated", OrderEvaluated),
    "order.refunded": ("Lines of a closed order were refunded", OrderRefunded),
    "order.voided": ("An order was voided", OrderVoided),
    "points.pending": ("A closed order's points wait for the accrual delay", PointsPending),
    "points.posted": ("Points posted to the member", PointsPosted),
    "points.reversed": ("Posted points were clawed back (refund, edit, void)", PointsReversed),
    "points.expired": ("Points expired", PointsExpired),
    "points.transferred": ("Posted points moved between two members", PointsTransferred),
    "tier.changed": ("The member moved to another tier", TierChanged),
    "reward.issued": ("The member got a reward", RewardIssued),
    "reward.redeemed": ("The member spent points on a reward", RewardRedeemed),
    "reward.reserved": ("A reward was applied to an open order", RewardMoved),
    "reward.used": ("A reward was used by an order that closed", RewardMoved),
    "reward.released": ("A reserved or used reward is available again", RewardMoved),
    "reward.expired": ("A reward's valid days passed", RewardMoved),
    "punch_card.progressed": ("A visit punched a punch card", PunchCardProgressed),
    "gift_card.changed": ("A gift card's money moved", GiftCardChanged),
    "gift_card.transferred": ("Money moved from one gift card to another", GiftCardTransferred),
    "program.published": ("A program version was uploaded", ProgramPublished),
    "program.activated": ("A program version was set to go live", ProgramActivated),
}

WEBHOOK_HEADERS: list[dict[str, Any]] = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The message's id, the same on every retry: deduplicate on it",
        "schema": {"type": "string"},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Unix seconds when this attempt was sent",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Standard Webhooks: v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>, "
        "space-separated while two secrets sign",
        "schema": {"type": "string"},
    },
]


def _camel(event_type: str) -> str:
    return "".join(part.capitalize() for part in event_type.replace("_", ".").split("."))


def webhooks() -> tuple[dict[str, Any], dict[str, Any]]:
    """The document's `webhooks`, one per event type the service sends, and the component
    schemas they refer to (each event's envelope, named `<Type>Event`, and its data)."""
    _, top = models_json_schema(
        [(EVENTS[t][1], "validation") for t in EVENT_TYPES], ref_template=SCHEMA_REF
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    section: dict[str, Any] = {}
    for event_type in EVENT_TYPES:  # a type sent but not described here fails at start-up
        summary, data = EVENTS[event_type]
        name = _camel(event_type)
        schemas[f"{name}Event"] = {
            "title": f"{name}Event",
            "description": f"The body of a `{event_type}` message: {summary.lower()}",
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string", "const": event_type},
                "timestamp": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When it happened (a sandbox's own clock in a sandbox)",
                },
                "data": {"$ref": SCHEMA_REF.format(model=data.__name__)},
            },
        }
        section[event_type] = {
            "post": {
                "operationId": f"on{name}",
                "summary": summary,
                "tags": ["webhook events"],
                "parameters": WEBHOOK_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": SCHEMA_REF.format(model=f"{name}Event")}
                        }
                    },
                },
                "responses": {
                    "2XX": {
                        "description": "Delivered. Any other answer, or none within 10 s, is "
                        "retried on the schedule; 410 Gone disables the endpoint"
                    }
                },
            }
        }
    return section, schemas
