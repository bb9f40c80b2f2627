"""Bounds on a whole order (docs/api.md, "Limits and bad input"): each amount alone is at most
10,000,000,000.00, and so are the order's total, its discounts and its tenders; one order earns
at most 10^12 points. Within them no figure an order leads to can overflow a 64-bit integer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from punchcard.engine.evaluate import MAX_ORDER_POINTS, Standing, allocate, evaluate
from punchcard.engine.orders import (
    MAX_AMOUNT,
    Order,
    OrderFormatError,
    check_order,
    parse_order_parts,
)
from punchcard.engine.programs import Program, parse_program
from punchcard.errors import InvalidInput

from ..conftest import EXAMPLE_PROGRAM

AT = datetime(2026, 3, 3, 18, 0, tzinfo=UTC)
INT64 = 2**63 - 1
TOTAL = "the order's total is more than 10000000000.00"
TOGETHER = "together more than 10000000000.00"
POINTS = "order: earns more than 1000000000000 points"
HEAD = "program: p\nname: P\ncurrency: USD\ntimezone: America/Chicago\n"
P5 = parse_program(  # the auditor's program
    HEAD + "earn: {points_per_unit: 1000, rounding: floor, accrual_delay: PT1H}\n"
)
ONE_BONUS = parse_program(  # 1 point per cent, and a promotion of 1 point on every order
    HEAD
    + "earn: {points_per_unit: 100, rounding: floor}\n"
    + "promotions:\n"
    + "  - {id: one, starts: 2000-01-01T00:00:00, ends: 2100-01-01T00:00:00, bonus_points: 1}\n"
)
EXAMPLE = parse_program(EXAMPLE_PROGRAM.read_text())
GREEDY = parse_program(  # every rate and multiplier at its largest
    HEAD
    + "earn: {points_per_unit: 1000000, rounding: ceil}\n"
    + "tiers:\n  metric: points\n  window: lifetime\n  levels:\n"
    + "    - {id: member, threshold: 0, multiplier: 1000000}\n"
    + "item_bonuses:\n  - {id: all, match: {categories: [c]}, points_per_unit: 1000000}\n"
    + "promotions:\n"
    + "  - {id: x, starts: 2000-01-01T00:00:00, ends: 2100-01-01T00:00:00, multiplier: 1000000}\n"
)


def _cents(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _line(i: int, qty: int, cents: int, mods: tuple[tuple[int, int], ...] = ()) -> dict[str, Any]:
    return {
        "id": f"l{i}",
        "sku": "X",
        "category": "c",
        "qty": qty,
        "unit_price": _cents(cents),
        "modifiers": [
            {"sku": "M", "category": "c", "qty": q, "unit_price": _cents(p)} for q, p in mods
        ],
    }


def _order(data: dict[str, Any], where: str = "order") -> Order:
    """An order as the services make it: parsed, then checked whole."""
    order = Order(id="o", at=AT, **parse_order_parts(data, where))
    check_order(order, where)
    return order


def _refused(data: dict[str, Any], where: str = "order") -> str:
    with pytest.raises(OrderFormatError) as caught:
        _order(data, where)
    return str(caught.value)


def test_a_total_of_exactly_the_bound_is_taken_and_one_cent_more_is_refused() -> None:
    at_bound = {"lines": [_line(0, 1_000_000, 1_000_000)]}  # 1,000,000 x 10,000.00
    assert sum(line.qty * line.unit_amount for line in _order(at_bound).lines) == MAX_AMOUNT
    over = {"lines": [*at_bound["lines"], _line(1, 1, 1)]}
    assert _refused(over) == f"order.lines: {TOTAL}"


def test_the_auditors_line_with_a_modifier_is_refused_by_name() -> None:
    big = _line(0, 1_000_000, MAX_AMOUNT, ((1_000_000, MAX_AMOUNT),))
    assert _refused({"lines": [big]}) == f"order.lines: {TOTAL}"
    twenty = [_line(i, 1_000_000, MAX_AMOUNT) for i in range(20)]
    assert _refused({"lines": twenty}) == f"order.lines: {TOTAL}"


@pytest.mark.parametrize("part", ["tax", "tip", "fees"])
def test_tax_tip_and_fees_count_in_the_total_and_are_named(part: str) -> None:
    lines = [_line(0, 1, MAX_AMOUNT - 1)]
    assert _order({"lines": lines, part: "0.01"}).lines
    assert _refused({"lines": lines, part: "0.02"}) == f"order.{part}: {TOTAL}"


@pytest.mark.parametrize("part", ["discounts", "tenders"])
def test_discounts_and_tenders_together_are_bounded(part: str) -> None:
    half = _cents(MAX_AMOUNT // 2)
    item = {"amount": half} if part == "discounts" else {"type": "cash", "amount": half}
    lines = [_line(0, 1, 1000)]
    assert _order({"lines": lines, part: [item, item]}).lines
    over = [item, item, {**item, "amount": "0.01"}]
    assert _refused({"lines": lines, part: over}) == f"order.{part}: {TOGETHER}"


def test_an_edit_is_checked_on_the_whole_order_and_named_as_an_edit() -> None:
    placed = _order({"lines": [_line(0, 1, 1000)], "tax": "5000000000.00"})
    parts = parse_order_parts({"tip": "4999999990.00"}, "edit")
    check_order(placed.with_parts(**parts), "edit")  # exactly the bound
    parts = parse_order_parts({"tip": "4999999990.01"}, "edit")
    with pytest.raises(OrderFormatError) as caught:
        check_order(placed.with_parts(**parts), "edit")
    assert str(caught.value) == f"edit.tip: {TOTAL}"


def _points(program: Program, cents: int, tier: str = "member") -> int:
    order = _order({"lines": [_line(0, 1, cents)]})
    return evaluate(program, order, allocate(program, order), Standing(tier=tier)).points


def test_an_order_earning_exactly_the_bound_is_taken_and_one_point_more_is_refused() -> None:
    assert _points(ONE_BONUS, MAX_ORDER_POINTS - 1) == MAX_ORDER_POINTS  # base + 1 bonus
    with pytest.raises(InvalidInput) as caught:
        _points(ONE_BONUS, MAX_ORDER_POINTS)
    assert caught.value.message == POINTS


def test_the_auditors_program_refuses_an_order_past_the_points_bound() -> None:
    """1000 points per 1.00: 1,000,000,000.00 earns exactly 10^12, a cent more is refused."""
    assert _points(P5, 10**11) == MAX_ORDER_POINTS
    with pytest.raises(InvalidInput) as caught:
        _points(P5, 10**11 + 1)
    assert str(caught.value) == POINTS
    assert _points(P5, 100) == 1000  # a normal order earns as before


# --------------------------------------------------------------------------- property

qty_st = st.one_of(st.integers(1, 100), st.integers(1, 1_000_000))
cents_st = st.one_of(st.integers(0, 10_000), st.integers(0, MAX_AMOUNT))
modifier_st = st.tuples(qty_st, cents_st)
line_st = st.tuples(qty_st, cents_st, st.lists(modifier_st, max_size=2))


@given(
    lines=st.lists(line_st, min_size=1, max_size=4),
    extras=st.tuples(cents_st, cents_st, cents_st),
    discounts=st.lists(cents_st, max_size=3),
    tenders=st.lists(cents_st, max_size=3),
    case=st.sampled_from(
        [(EXAMPLE, "platinum"), (P5, "member"), (ONE_BONUS, "member"), (GREEDY, "member")]
    ),
)
def test_any_order_within_the_bounds_fits_64_bit_integers(
    lines: list[tuple[int, int, list[tuple[int, int]]]],
    extras: tuple[int, int, int],
    discounts: list[int],
    tenders: list[int],
    case: tuple[Program, str],
) -> None:
    """An order either is refused by name, or its sums, spend, discounts and points all fit a
    64-bit integer, and it earns at most 10^12 points under any program."""
    data = {
        "lines": [_line(i, qty, price, tuple(mods)) for i, (qty, price, mods) in enumerate(lines)],
        "tax": _cents(extras[0]),
        "tip": _cents(extras[1]),
        "fees": _cents(extras[2]),
        "discounts": [{"amount": _cents(d)} for d in discounts],
        "tenders": [{"type": "cash", "amount": _cents(t)} for t in tenders],
    }
    try:
        order = _order(data)
    except OrderFormatError as exc:
        assert str(exc).endswith((TOTAL, TOGETHER))
        return
    gross = sum(line.qty * line.unit_amount for line in order.lines)
    assert gross + order.tax + order.tip + order.fees <= MAX_AMOUNT
    assert sum(d.amount for d in order.discounts) <= MAX_AMOUNT
    assert sum(t.amount for t in order.tenders) <= MAX_AMOUNT
    program, tier = case
    allocation = allocate(program, order)
    assert all(0 <= v <= MAX_AMOUNT for v in allocation.line_discounts.values())
    try:
        outcome = evaluate(program, order, allocation, Standing(tier=tier))
    except InvalidInput as exc:
        assert exc.message == POINTS
        return
    assert 0 <= outcome.qualifying_spend <= MAX_AMOUNT
    assert 0 <= outcome.points <= MAX_ORDER_POINTS < INT64
    assert all(0 <= award.points <= MAX_ORDER_POINTS for award in outcome.awards)
