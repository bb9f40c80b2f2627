"""Responses: domain values rendered as JSON, money as decimal strings with currency."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from punchcard.engine.evaluate import Outcome
from punchcard.engine.money import format_money
from punchcard.engine.programs import Discount
from punchcard.services.gift_cards import GiftCardView, Transfer
from punchcard.services.members import MemberView, PointsTransfer


def money(cents: int | None, currency: str) -> dict[str, str] | None:
    return None if cents is None else {"amount": format_money(cents), "currency": currency}


def when(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def balance(view: MemberView, consistent: bool = True) -> dict[str, Any]:
    return {
        "member": view.member,
        "posted": view.posted,
        "pending": view.pending,
        "available": view.available,
        "pending_items": [
            {"order": item.order, "points": item.points, "expected_at": when(item.due_at)}
            for item in view.pending_items
        ],
        "consistent": consistent,
    }


def member(view: MemberView, consistent: bool = True) -> dict[str, Any]:
    return {
        "id": view.member,
        "tier": view.tier,
        "visits": view.visits,
        "punch_cards": view.punch_cards,
        "rewards": view.rewards,
        "points": balance(view, consistent),
        "consistent": consistent,
    }


def outcome(result: Outcome | None, currency: str) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "points": result.points,
        "qualifying_spend": money(result.qualifying_spend, currency),
        "visit": result.visit,
        "promotions": sorted(result.promotions),
        "awards": [
            {"rule": a.rule, "points": a.points, "explanation": a.explanation}
            for a in result.awards
        ],
        "explanation": result.explain(),
    }


def order(data: dict[str, Any]) -> dict[str, Any]:
    currency = data["currency"]
    document = data["document"]
    return {
        "id": data["id"],
        "member": data["member"],
        "state": data["state"],
        "placed_at": when(data["placed_at"]),
        "program_version": data["program_version"],
        "tier_at_placement": data["tier_at_placement"],
        "lines": [
            {
                "id": line["id"],
                "sku": line["sku"],
                "category": line["category"],
                "qty": line["qty"],
                "refunded_qty": data["refunded"].get(line["id"], 0),
                "unit_price": money(line["unit_price"], currency),
                "kind": "gift_card" if line["gift_card"] else "item",
                "modifiers": [
                    {
                        "sku": m["sku"],
                        "category": m["category"],
                        "qty": m["qty"],
                        "unit_price": money(m["unit_price"], currency),
                    }
                    for m in line["modifiers"]
                ],
            }
            for line in document["lines"]
        ],
        "discounts": [
            {"amount": money(d["amount"], currency), "line": d["line"]}
            for d in document["discounts"]
        ],
        "tax": money(document["tax"], currency),
        "tip": money(document["tip"], currency),
        "fees": money(document["fees"], currency),
        "tenders": [
            {"type": t["type"], "amount": money(t["amount"], currency), "gift_card": t["gift_card"]}
            for t in document["tenders"]
        ],
        "rewards": data["rewards"],
        "outcome": outcome(data["outcome"], currency),
        "posting": {
            "state": data["posting"]["state"],
            "expected_at": when(data["posting"]["due_at"]),
            "posted_points": data["posting"]["posted_points"],
        },
    }


def gift_card(view: GiftCardView) -> dict[str, Any]:
    return {
        "id": view.card,
        "balance": money(view.balance, view.currency),
        "last_approved": money(view.last_approved, view.currency),
    }


def card_transfer(moved: Transfer, source: GiftCardView, target: GiftCardView) -> dict[str, Any]:
    return {
        "id": moved.id,
        "amount": money(moved.amount, source.currency),
        "from": gift_card(source),
        "to": gift_card(target),
    }


def points_transfer(
    moved: PointsTransfer, source: MemberView, target: MemberView
) -> dict[str, Any]:
    return {
        "id": moved.id,
        "points": moved.points,
        "paid_debt": moved.paid_debt,
        "from": balance(source),
        "to": balance(target),
    }


def discount(offer: Discount, currency: str) -> dict[str, Any]:
    """A reward's discount, money as decimal strings with the currency."""
    if offer.free_item is not None:
        return {
            "free_item": {
                "skus": sorted(offer.free_item.skus),
                "categories": sorted(offer.free_item.categories),
            },
            "max_value": money(offer.max_value, currency),
        }
    if offer.amount_off is not None:
        return {"amount_off": money(offer.amount_off, currency)}
    return {"percent_off": str(offer.percent_off)}
