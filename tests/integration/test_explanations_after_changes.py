"""After a refund or an edit an order's explanation still accounts for every figure (rule 6).

Refunds re-evaluate on the discounts fixed at close, so they need the service layer to
say how those discounts came about; exact lists, so no sentence goes missing again.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import orders

from .helpers import START, new_app

PROGRAM = """
program: explained
name: Explained
currency: USD
timezone: America/Chicago
earn: {points_per_unit: 10, exclude: {categories: [alcohol]}, accrual_delay: PT0S}
visits: {min_spend: "5.00", max_per_day: 1}
promotions:
  - {id: big-order, starts: 2026-01-01T00:00:00, ends: 2027-01-01T00:00:00,
     bonus_points: 50, min_spend: "20.00"}
rewards:
  - {id: free-soup, cost: 10, valid_days: 30, discount: {free_item: {skus: [SOUP]}}}
"""
SPEND = "(tax, tip, fees and excluded lines left out)."


def _app(engine: sa.Engine) -> Loyalty:
    app = new_app(engine, PROGRAM)
    app.enroll({"member": "ann"}, START)
    return app


def _soup(qty: int, price: str = "10.00") -> dict[str, Any]:
    return {"id": "l1", "sku": "SOUP", "category": "food", "qty": qty, "unit_price": price}


BEER = {"id": "l2", "sku": "BEER", "category": "alcohol", "qty": 1, "unit_price": "6.00"}


def test_a_refund_explains_the_discount_taken_back_the_visit_kept_and_each_award(
    engine: sa.Engine,
) -> None:
    app = _app(engine)
    order = {"id": "o1", "member": "ann", "discounts": [{"amount": "3.00"}], "lines": [_soup(3)]}
    app.place_order(order, START)
    assert app.order_explanation("o1") == [  # a first evaluation, unchanged
        "Order discounts of 3.00 are spread over the lines: l1 3.00.",
        f"Qualifying spend is 27.00 {SPEND}",
        "The order counts as a visit.",
        "Base: 27.00 x 10 points = 270.",
        "Promotion big-order: 50 bonus points.",
    ]
    app.refund_order({"order": "o1", "lines": [{"line": "l1", "qty": 1}]}, START)
    assert app.order_explanation("o1") == [
        "Order discounts of 3.00 are spread over the lines: l1 3.00.",
        "Line l1: 1 of 3 units refunded, taking back 1.00 of its 3.00 discount"
        " (2.00 stays on the units kept).",
        f"Qualifying spend is 18.00 {SPEND}",
        "Promotion big-order no longer applies: spend is below its 20.00 minimum.",
        "The order is still a visit: 18.00 reaches the 5.00 minimum.",
        "Base: 18.00 x 10 points = 180.",
    ]
    app.refund_order({"order": "o1", "all": True}, START)
    assert app.order_explanation("o1") == [
        "Order discounts of 3.00 are spread over the lines: l1 3.00.",
        "The order is fully refunded: it earns nothing and its visit is withdrawn.",
    ]


def test_an_edit_explains_the_refunds_it_keeps_and_the_visit_kept_or_withdrawn(
    engine: sa.Engine,
) -> None:
    app = _app(engine)
    lines = [_soup(3), BEER]
    app.place_order(
        {"id": "o1", "member": "ann", "discounts": [{"amount": "3.00"}], "lines": lines}, START
    )
    app.refund_order({"order": "o1", "lines": [{"line": "l1", "qty": 1}]}, START)
    app.edit_order({"order": "o1", "tip": "1.00"}, START)
    # 3.00 over 30.00/6.00: 2.50/0.50; the refunded unit takes round_half_up(2.50 / 3) = 0.83
    assert app.order_explanation("o1") == [
        "Order discounts of 3.00 are spread over the lines: l1 2.50, l2 0.50.",
        "Line l1: 1 of 3 units refunded, taking back 0.83 of its 2.50 discount"
        " (1.67 stays on the units kept).",
        f"Qualifying spend is 18.33 {SPEND}",
        "The order is still a visit: 18.33 reaches the 5.00 minimum.",
        "Base: 18.33 x 10 points = 183.",
    ]
    app.edit_order({"order": "o1", "lines": [_soup(3, "2.00"), BEER]}, START)
    # 3.00 over 6.00/6.00: 1.50/1.50; kept 2 x 2.00 - (1.50 - 0.50) = 3.00, below 5.00
    assert app.order_explanation("o1") == [
        "Order discounts of 3.00 are spread over the lines: l1 1.50, l2 1.50.",
        "Line l1: 1 of 3 units refunded, taking back 0.50 of its 1.50 discount"
        " (1.00 stays on the units kept).",
        f"Qualifying spend is 3.00 {SPEND}",
        "The visit is withdrawn: spend is now below the 5.00 minimum.",
        "Base: 3.00 x 10 points = 30.",
    ]


def test_a_refund_says_why_an_order_that_was_no_visit_stays_none(engine: sa.Engine) -> None:
    app = _app(engine)
    app.place_order({"id": "o1", "member": "ann", "lines": [_soup(1, "6.00")]}, START)
    app.place_order({"id": "o2", "member": "ann", "lines": [_soup(2, "6.00")]}, START)
    assert "No visit: 1 visit(s) already counted that day." in app.order_explanation("o2")
    app.refund_order({"order": "o2", "lines": [{"line": "l1", "qty": 1}]}, START)
    assert app.order_explanation("o2") == [
        "Line l1: 1 of 2 units refunded.",
        f"Qualifying spend is 6.00 {SPEND}",
        "No visit: the order was not one, and a refund can not make it one.",
        "Base: 6.00 x 10 points = 60.",
    ]


def test_a_refund_explains_a_reward_discount_fixed_at_close(engine: sa.Engine) -> None:
    app = _app(engine)
    app.place_order({"id": "o1", "member": "ann", "lines": [_soup(1)]}, START)
    app.run_due(START)
    app.redeem({"member": "ann", "reward": "free-soup", "as": "r1"}, START)
    app.place_order({"id": "o2", "member": "ann", "lines": [_soup(2)], "rewards": ["r1"]}, START)
    app.refund_order({"order": "o2", "lines": [{"line": "l1", "qty": 1}]}, START)
    assert app.order_explanation("o2") == [
        "Reward free-soup takes 10.00 off line l1.",
        "Line l1: 1 of 2 units refunded, taking back 5.00 of its 10.00 discount"
        " (5.00 stays on the units kept).",
        f"Qualifying spend is 5.00 {SPEND}",
        "No visit: the order was not one, and a refund can not make it one.",
        "Base: 5.00 x 10 points = 50.",
    ]


def test_discounts_that_allocating_again_would_not_give_are_listed_as_fixed(
    engine: sa.Engine,
) -> None:
    app = _app(engine)
    lines = [_soup(1), {**_soup(1), "id": "l2"}]
    app.place_order(
        {"id": "o1", "member": "ann", "discounts": [{"amount": "3.00"}], "lines": lines}, START
    )
    with engine.begin() as conn:  # as if fixed by another allocation than today's
        conn.execute(sa.update(orders).values(line_discounts={"l1": 200, "l2": 100}))
    app.refund_order({"order": "o1", "lines": [{"line": "l2", "qty": 1}]}, START)
    assert app.order_explanation("o1") == [
        "Discounts fixed earlier stay on the lines: l1 2.00, l2 1.00.",
        "Line l2: 1 of 1 units refunded, taking back 1.00 of its 1.00 discount"
        " (0.00 stays on the units kept).",
        f"Qualifying spend is 8.00 {SPEND}",
        "The order is still a visit: 8.00 reaches the 5.00 minimum.",
        "Base: 8.00 x 10 points = 80.",
    ]


def test_a_refund_says_when_a_held_multiplier_promotion_gives_nothing_any_more(
    engine: sa.Engine,
) -> None:
    program = PROGRAM.replace("points_per_unit: 10,", "points_per_unit: 1, rounding: floor,")
    program = program.replace('bonus_points: 50, min_spend: "20.00"', "multiplier: 2")
    app = new_app(engine, program)
    app.enroll({"member": "ann"}, START)
    lines = [_soup(1, "0.50"), {**_soup(1, "5.00"), "id": "l2"}]
    app.place_order({"id": "o1", "member": "ann", "lines": lines}, START)
    assert "Promotion big-order x2: 5 bonus points on 5." in app.order_explanation("o1")
    app.refund_order({"order": "o1", "lines": [{"line": "l2", "qty": 1}]}, START)
    assert app.order_explanation("o1") == [  # floor(0.50 x 1) = 0
        "Line l2: 1 of 1 units refunded.",
        f"Qualifying spend is 0.50 {SPEND}",
        "Promotion big-order no longer gives points: 0 bonus points on 0.",
        "The visit is withdrawn: spend is now below the 5.00 minimum.",
        "Base: 0.50 x 1 points = 0.",
    ]
