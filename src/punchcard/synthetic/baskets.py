"""What a guest buys and pays: lines with modifiers, discounts, tax, tip and fees.

Amounts are integer cents until the body is written, then the API's money strings.
The total is what the tenders must add up to: every line (modifiers included, gift
card sales too) less the discounts, plus tax, tip and fees.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from punchcard.engine.money import format_money, round_ratio
from punchcard.synthetic.chain import Store
from punchcard.synthetic.menu import (
    CATERING_PER_MILLE,
    DINNER,
    DINNER_FROM_S,
    EXTRAS,
    GIFT_CARD_SKU,
    ITEMS,
    LINE_COUNTS,
    LUNCH,
    store_price,
)

DISCOUNT_PERCENT = 8  # orders with a coupon or a comp
ORDER_DISCOUNT_SHARE = 60  # of those: percent that are order discounts, the rest line discounts
TIP_PERCENT = 35  # orders with a tip
DIGITAL_PERCENT = 25  # app and web orders: they carry a service or delivery fee
SERVICE_FEE, DELIVERY_FEE = 149, 399  # cents
TIP_PERCENTS = (10, 15, 18, 20, 25)
TIP_CUMULATIVE = tuple(accumulate((15, 30, 25, 25, 5)))  # how often each is chosen
COUNTS = range(1, len(LINE_COUNTS) + 1)


@dataclass(frozen=True, slots=True)
class Basket:
    parts: dict[str, Any]  # lines, discounts, tax, tip, fees: the order body's shape
    total: int  # cents the tenders must cover
    lines: int


def basket(rng: random.Random, store: Store, second: int, gift_card: int = 0) -> Basket:
    """One order's contents at `store`, `second` after local midnight; `gift_card` cents sold."""
    level = store.city.price_level
    weights = DINNER if second >= DINNER_FROM_S else LUNCH
    catering = rng.randrange(1000) < CATERING_PER_MILLE
    count = rng.randint(10, 16) if catering else rng.choices(COUNTS, cum_weights=LINE_COUNTS)[0]
    lines: list[dict[str, Any]] = []
    amounts: list[int] = []  # cents per line, modifiers included
    for n, item in enumerate(rng.choices(ITEMS, cum_weights=weights, k=count), start=1):
        qty = rng.choices(range(1, len(item.cumulative) + 1), cum_weights=item.cumulative)[0]
        if catering:
            qty += rng.randint(1, 8)
        unit = store_price(item.price, level)
        line: dict[str, Any] = {
            "id": f"l{n}",
            "sku": item.sku,
            "category": item.category,
            "qty": qty,
            "unit_price": format_money(unit),
        }
        if item.customizable:
            mods = [e for e in EXTRAS if rng.randrange(100) < e.percent]
            if mods:
                line["modifiers"] = [
                    {
                        "sku": e.sku,
                        "category": e.category,
                        "qty": 1,
                        "unit_price": format_money(store_price(e.price, level)),
                    }
                    for e in mods
                ]
                unit += sum(store_price(e.price, level) for e in mods)
        lines.append(line)
        amounts.append(qty * unit)
    gross = sum(amounts)
    parts: dict[str, Any] = {"lines": lines}
    discounts = _discounts(rng, lines, amounts, gross)
    if discounts:
        parts["discounts"] = [
            {"amount": format_money(d), **({"line": line} if line else {})} for d, line in discounts
        ]
    net = gross - sum(d for d, _ in discounts)
    tax = round_ratio(net * store.city.tax_per_100k, 100_000, "half_up")
    parts["tax"] = format_money(tax)
    tip = _tip(rng, net, net + tax)
    if tip:
        parts["tip"] = format_money(tip)
    fees = 0
    if rng.randrange(100) < DIGITAL_PERCENT:
        fees = SERVICE_FEE if rng.randrange(100) < 70 else DELIVERY_FEE
        parts["fees"] = format_money(fees)
    if gift_card:
        # A gift card sold with the meal: never discounted, taxed or earning (kind gift_card).
        lines.append(
            {
                "id": f"l{len(lines) + 1}",
                "sku": GIFT_CARD_SKU,
                "category": "gift_card",
                "qty": 1,
                "unit_price": format_money(gift_card),
                "kind": "gift_card",
            }
        )
    return Basket(parts, net + tax + tip + fees + gift_card, len(lines))


def _discounts(
    rng: random.Random, lines: list[dict[str, Any]], amounts: list[int], gross: int
) -> list[tuple[int, str | None]]:
    if rng.randrange(100) >= DISCOUNT_PERCENT or gross == 0:
        return []
    if rng.randrange(100) < ORDER_DISCOUNT_SHARE:
        if rng.randrange(2):
            amount = rng.choice((200, 300, 500))  # a coupon
        else:
            amount = round_ratio(gross * rng.choice((10, 15, 20)), 100, "half_up")  # percent off
        return [(min(amount, gross), None)]
    n = rng.randrange(len(lines))
    line = lines[n]
    unit = amounts[n] // line["qty"]
    amount = rng.choice((100, 200, unit))  # a fixed amount off, or one unit comped
    return [(min(amount, amounts[n]), str(line["id"]))]


def _tip(rng: random.Random, net: int, with_tax: int) -> int:
    if rng.randrange(100) >= TIP_PERCENT:
        return 0
    if rng.randrange(4) == 0:  # "round up to the dollar"
        return 100 - with_tax % 100 if with_tax % 100 else 100
    percent = rng.choices(TIP_PERCENTS, cum_weights=TIP_CUMULATIVE)[0]
    return round_ratio(net * percent, 100, "half_up")
