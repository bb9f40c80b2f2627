"""Rows <-> domain values, in one place: orders and outcomes as JSON documents."""

from __future__ import annotations

from datetime import date
from typing import Any

from punchcard.engine.evaluate import Award, Outcome
from punchcard.engine.orders import Discount, Line, Modifier, Order, Tender


def order_document(order: Order) -> dict[str, Any]:
    return {
        "lines": [
            {
                "id": line.id,
                "sku": line.sku,
                "category": line.category,
                "qty": line.qty,
                "unit_price": line.unit_price,
                "gift_card": line.gift_card,
                "modifiers": [
                    {"sku": m.sku, "category": m.category, "qty": m.qty, "unit_price": m.unit_price}
                    for m in line.modifiers
                ],
            }
            for line in order.lines
        ],
        "discounts": [{"amount": d.amount, "line": d.line} for d in order.discounts],
        "tax": order.tax,
        "tip": order.tip,
        "fees": order.fees,
        "tenders": [
            {"type": t.type, "amount": t.amount, "gift_card": t.gift_card} for t in order.tenders
        ],
        "rewards": [],
    }


def order_from_row(row: Any) -> Order:
    doc = row.document
    return Order(
        id=row.external_id,
        at=row.at,
        lines=tuple(
            Line(
                id=line["id"],
                sku=line["sku"],
                category=line["category"],
                qty=line["qty"],
                unit_price=line["unit_price"],
                gift_card=line["gift_card"],
                modifiers=tuple(Modifier(**m) for m in line["modifiers"]),
            )
            for line in doc["lines"]
        ),
        discounts=tuple(Discount(**d) for d in doc["discounts"]),
        tax=doc["tax"],
        tip=doc["tip"],
        fees=doc["fees"],
        tenders=tuple(Tender(**t) for t in doc["tenders"]),
    )


def outcome_document(outcome: Outcome) -> dict[str, Any]:
    return {
        "points": outcome.points,
        "qualifying_spend": outcome.qualifying_spend,
        "visit": outcome.visit,
        "visit_day": outcome.visit_day.isoformat(),
        "promotions": sorted(outcome.promotions),
        "awards": [
            {"rule": a.rule, "points": a.points, "explanation": a.explanation}
            for a in outcome.awards
        ],
        "notes": list(outcome.notes),
    }


def outcome_from_document(doc: dict[str, Any]) -> Outcome:
    return Outcome(
        qualifying_spend=doc["qualifying_spend"],
        awards=tuple(Award(a["rule"], a["points"], a["explanation"]) for a in doc["awards"]),
        visit=doc["visit"],
        visit_day=date.fromisoformat(doc["visit_day"]),
        promotions=frozenset(doc["promotions"]),
        notes=tuple(doc["notes"]),
    )
