"""Property-based tests of the exact arithmetic: money, rounding, spreading, refunds, evaluation.

Each test states one property of docs/programs.md (rules 1, 2, 10 and the "Money" paragraph)
and checks it on inputs that hypothesis generates, against a reference computed independently
(`Fraction` and `Decimal` arithmetic, never binary floats).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from fractions import Fraction
from functools import lru_cache
from math import floor
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from punchcard.engine.documents import load_document
from punchcard.engine.evaluate import (
    Outcome,
    Standing,
    allocate,
    evaluate,
    line_remaining,
    spread,
)
from punchcard.engine.money import (
    MoneyFormatError,
    format_money,
    parse_money,
    round_half_up,
    round_points,
    round_ratio,
)
from punchcard.engine.orders import Discount, Line, Modifier, Order
from punchcard.engine.programs import Program, Reward, parse_program, program_from_data

from ..conftest import EXAMPLE_PROGRAM

PROGRAM: Program = parse_program(EXAMPLE_PROGRAM.read_text())
MEMBER = Standing(tier="member")
DECIMAL_MODES = {"floor": ROUND_FLOOR, "half_up": ROUND_HALF_UP, "ceil": ROUND_CEILING}


# --------------------------------------------------------------------------- spread


weights_st = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8)


@given(total=st.integers(min_value=0, max_value=10**7), weights=weights_st)
def test_spread_shares_sum_exactly_to_the_total(total: int, weights: list[int]) -> None:
    """With some weight, the shares add up to exactly `total`, one share per weight."""
    assume(sum(weights) > 0)
    shares = spread(total, weights)
    assert len(shares) == len(weights)
    assert sum(shares) == total


@given(total=st.integers(min_value=0, max_value=10**7), weights=weights_st)
def test_spread_each_share_is_floor_or_floor_plus_one(total: int, weights: list[int]) -> None:
    """Every share is the floor of its exact proportional value, or one more (largest remainder)."""
    assume(sum(weights) > 0)
    for share, weight in zip(spread(total, weights), weights, strict=True):
        exact = Fraction(total * weight, sum(weights))
        assert share in (floor(exact), floor(exact) + 1)
        if exact.denominator == 1:
            assert share == exact  # an exact share never takes an extra cent


@given(total=st.integers(min_value=0, max_value=10**7), weights=weights_st)
def test_spread_extra_cents_go_to_largest_remainders_earlier_first(
    total: int, weights: list[int]
) -> None:
    """Extra cents go to the largest remainders; among equal remainders, to the earlier index."""
    assume(sum(weights) > 0)
    whole = sum(weights)
    shares = spread(total, weights)
    remainder = [Fraction(total * w, whole) - floor(Fraction(total * w, whole)) for w in weights]
    extra = [
        share - floor(Fraction(total * w, whole)) for share, w in zip(shares, weights, strict=True)
    ]
    for i in range(len(weights)):
        for j in range(len(weights)):
            if extra[i] == 1 and extra[j] == 0:
                # i got a cent j did not: i's remainder is larger, or equal and i comes first
                assert remainder[i] > remainder[j] or (remainder[i] == remainder[j] and i < j)


@given(
    total=st.integers(min_value=1, max_value=10**4),
    weight=st.integers(min_value=1, max_value=10**4),
    count=st.integers(min_value=2, max_value=8),
)
def test_spread_equal_weights_favour_the_earlier_lines(total: int, weight: int, count: int) -> None:
    """Equal weights tie on every remainder: the extra cents go to the first indexes, in order."""
    shares = spread(total, [weight] * count)
    base, extra = divmod(total, count)
    assert shares == [base + 1] * extra + [base] * (count - extra)


@given(total=st.integers(min_value=0, max_value=10**7), size=st.integers(min_value=0, max_value=8))
def test_spread_over_zero_weights_gives_all_zero(total: int, size: int) -> None:
    """When the weights sum to zero there is nothing to spread over: every share is zero."""
    assert spread(total, [0] * size) == [0] * size


def test_spread_example_from_the_spec() -> None:
    """Scenario 01: 1.00 over lines of 23.00 and 6.00 splits 0.79 / 0.21."""
    assert spread(100, [2300, 600]) == [79, 21]


# --------------------------------------------------------------------------- rounding


decimals_st = st.decimals(
    min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=4, allow_nan=False
)


@given(value=decimals_st, mode=st.sampled_from(sorted(DECIMAL_MODES)))
def test_round_points_matches_decimal_quantize(value: Decimal, mode: str) -> None:
    """round_points on an exact Fraction agrees with Decimal.quantize in floor/half_up/ceil."""
    expected = int(value.quantize(Decimal(1), rounding=DECIMAL_MODES[mode]))
    assert round_points(Fraction(value), mode) == expected


@given(
    numerator=st.integers(min_value=-(10**9), max_value=10**9),
    denominator=st.integers(min_value=1, max_value=10**4),
    mode=st.sampled_from(sorted(DECIMAL_MODES)),
)
def test_round_points_on_any_fraction_is_within_one(
    numerator: int, denominator: int, mode: str
) -> None:
    """On any fraction (also not a finite decimal): floor <= value <= ceil, half_up is the nearest."""
    value = Fraction(numerator, denominator)
    rounded = round_points(value, mode)
    if mode == "floor":
        assert rounded <= value < rounded + 1
    elif mode == "ceil":
        assert rounded - 1 < value <= rounded
    else:
        assert abs(value - rounded) <= Fraction(1, 2)
        if abs(value - rounded) == Fraction(1, 2):
            assert abs(rounded) > abs(value)  # ties away from zero


@given(whole=st.integers(min_value=0, max_value=10**9))
def test_round_half_up_on_exact_halves_goes_away_from_zero(whole: int) -> None:
    """x.5 rounds up to x+1; -x.5 rounds to -(x+1), away from zero."""
    half = Fraction(2 * whole + 1, 2)
    assert round_half_up(half) == whole + 1
    assert round_half_up(-half) == -(whole + 1)
    assert round_points(half, "half_up") == whole + 1
    assert round_points(-half, "half_up") == -(whole + 1)


@given(
    numerator=st.integers(min_value=-(10**15), max_value=10**15),
    denominator=st.integers(min_value=1, max_value=10**6),
    mode=st.sampled_from(sorted(DECIMAL_MODES)),
)
def test_round_ratio_agrees_with_round_points(numerator: int, denominator: int, mode: str) -> None:
    """The integer-only hot path rounds numerator/denominator exactly as the Fraction path does."""
    assert round_ratio(numerator, denominator, mode) == round_points(
        Fraction(numerator, denominator), mode
    )


@given(value=decimals_st, mode=st.sampled_from(sorted(DECIMAL_MODES)))
def test_round_ratio_matches_decimal_quantize(value: Decimal, mode: str) -> None:
    """round_ratio on a decimal's integer ratio agrees with Decimal.quantize (halves away from 0)."""
    numerator, denominator = value.as_integer_ratio()
    expected = int(value.quantize(Decimal(1), rounding=DECIMAL_MODES[mode]))
    assert round_ratio(numerator, denominator, mode) == expected


# --------------------------------------------------------------------------- money


money_text_st = st.builds(
    lambda whole, frac: f"{whole}.{frac}",
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    st.from_regex(r"[0-9]{2}", fullmatch=True),
)


@given(text=money_text_st)
def test_parse_money_reads_two_decimal_text_exactly(text: str) -> None:
    """ "D+.DD" is read as exact cents, and format_money writes its normal form back."""
    whole, frac = text.split(".")
    cents = parse_money(text)
    assert cents == int(whole) * 100 + int(frac)
    assert format_money(cents) == f"{int(whole)}.{frac}"
    assert parse_money(format_money(cents)) == cents


@given(value=st.integers(min_value=0, max_value=10**12))
def test_parse_money_of_an_int_is_whole_currency_units(value: int) -> None:
    """An int is that many currency units; formatting and parsing again round-trips."""
    cents = parse_money(value)
    assert cents == value * 100
    assert format_money(cents) == f"{value}.00"
    assert parse_money(format_money(cents)) == cents


@given(cents=st.integers(min_value=-(10**14), max_value=10**14))
def test_format_then_parse_round_trips_any_cents(cents: int) -> None:
    """format_money writes two decimals that parse_money reads back to the same cents."""
    assert parse_money(format_money(cents)) == cents


@given(
    whole=st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    frac=st.from_regex(r"[0-9]{3,6}", fullmatch=True),
)
def test_parse_money_rejects_three_or_more_decimals(whole: str, frac: str) -> None:
    """Money has at most two decimals: "1.234" (even "1.000") is an error, never rounded."""
    with pytest.raises(MoneyFormatError):
        parse_money(f"{whole}.{frac}")


@given(
    text=st.text(min_size=1, max_size=12).filter(
        lambda s: any(c.isascii() and c.isalpha() for c in s)
    )
)
def test_parse_money_rejects_text_with_letters(text: str) -> None:
    """Any text with a letter in it (e.g. "9.5O", "1e3", "NaN", "Infinity") is not money."""
    with pytest.raises(MoneyFormatError):
        parse_money(text)


@pytest.mark.parametrize(
    "value",
    ["", "   ", ".", "1.", ".50", "1,50", "+1.00", "--1", True, False, None, [], {}],
)
def test_parse_money_rejects_malformed_values(value: Any) -> None:
    """Empty text, a lone point, a comma, bool and non-numbers are errors."""
    with pytest.raises(MoneyFormatError):
        parse_money(value)


# --------------------------------------------------------------------------- line_remaining


@st.composite
def line_with_discount(draw: st.DrawFn) -> tuple[Line, int]:
    """A line and a discount no larger than the line (as `allocate` guarantees)."""
    qty = draw(st.integers(min_value=1, max_value=30))
    unit = draw(st.integers(min_value=0, max_value=5_000))
    mods = draw(
        st.lists(
            st.builds(
                Modifier,
                sku=st.just("MOD"),
                category=st.just("add_on"),
                qty=st.integers(min_value=1, max_value=3),
                unit_price=st.integers(min_value=0, max_value=500),
            ),
            max_size=2,
        )
    )
    line = Line("l1", "SKU", "cat", qty, unit, tuple(mods))
    discount = draw(st.integers(min_value=0, max_value=qty * line.unit_amount))
    return line, discount


def _reference_remaining(line: Line, discount: int, refunded: int) -> int:
    kept = line.qty - refunded
    returned = round_half_up(Fraction(discount * refunded, line.qty))
    return line.unit_amount * kept - (discount - returned)


@given(case=line_with_discount())
def test_refunding_every_unit_leaves_nothing(case: tuple[Line, int]) -> None:
    """A full refund takes exactly all of the line's amount and all of its discount."""
    line, discount = case
    assert line_remaining(line, discount, line.qty) == 0
    assert line_remaining(line, discount, 0) == line.qty * line.unit_amount - discount


@given(case=line_with_discount(), data=st.data())
def test_refund_in_steps_equals_refund_at_once(case: tuple[Line, int], data: st.DataObject) -> None:
    """Refunding in any split of steps ends where refunding the total at once does.

    The rule counts on the cumulative refunded quantity, so after every step the remaining
    amount is the spec's formula on the running total, it never grows as more is refunded,
    and it is never negative.
    """
    line, discount = case
    total = data.draw(st.integers(min_value=0, max_value=line.qty), label="total refunded")
    steps: list[int] = []
    left = total
    while left:
        step = data.draw(st.integers(min_value=1, max_value=left), label="step")
        steps.append(step)
        left -= step
    cumulative = 0
    previous = line_remaining(line, discount, 0)
    for step in steps:
        cumulative += step
        now = line_remaining(line, discount, cumulative)
        assert now == _reference_remaining(line, discount, cumulative)
        assert 0 <= now <= previous
        previous = now
    assert previous == line_remaining(line, discount, total)


@given(
    qty=st.integers(min_value=1, max_value=30),
    unit=st.integers(min_value=0, max_value=5_000),
    discount=st.integers(min_value=0, max_value=10**6),
    refunded=st.integers(min_value=0, max_value=40),
)
def test_line_remaining_is_never_negative(
    qty: int, unit: int, discount: int, refunded: int
) -> None:
    """Whatever the discount and the refunded quantity (even beyond the line), never below zero."""
    assert line_remaining(Line("l1", "S", "c", qty, unit), discount, refunded) >= 0


# --------------------------------------------------------------------------- allocate + evaluate


SKUS = [
    ("BURR", "burrito"),
    ("TACO", "taco"),
    ("GUAC", "add_on"),
    ("BEER", "alcohol"),
    ("CHIPS", "side"),
    ("EGIFT", "gift_card"),
]


@st.composite
def orders_st(draw: st.DrawFn) -> Order:
    """A closed-order shape: 1-5 lines (some alcohol, some gift card sales), discounts of both kinds."""
    count = draw(st.integers(min_value=1, max_value=5))
    lines = []
    for i in range(count):
        sku, category = draw(st.sampled_from(SKUS))
        mods = draw(
            st.lists(
                st.builds(
                    Modifier,
                    sku=st.sampled_from(["GUAC", "CHEESE"]),
                    category=st.just("add_on"),
                    qty=st.integers(min_value=1, max_value=3),
                    unit_price=st.integers(min_value=0, max_value=300),
                ),
                max_size=2,
            )
        )
        lines.append(
            Line(
                id=f"l{i + 1}",
                sku=sku,
                category=category,
                qty=draw(st.integers(min_value=1, max_value=6)),
                unit_price=draw(st.integers(min_value=0, max_value=4_000)),
                modifiers=tuple(mods),
                gift_card=sku == "EGIFT" and draw(st.booleans()),
            )
        )
    discounts = draw(
        st.lists(
            st.builds(
                Discount,
                amount=st.integers(min_value=0, max_value=6_000),
                line=st.one_of(st.none(), st.sampled_from([line.id for line in lines])),
            ),
            max_size=4,
        )
    )
    at = draw(
        st.datetimes(
            min_value=datetime(2025, 1, 1),
            max_value=datetime(2028, 1, 1),
            timezones=st.just(UTC),
        )
    )
    return Order(id="o1", at=at, lines=tuple(lines), discounts=tuple(discounts))


def _rewards(draw_five_off: int) -> list[Reward]:
    return [PROGRAM.rewards_by_id["five-off"]] * draw_five_off


def _excluded(line: Line) -> bool:
    return bool(PROGRAM.earn.exclude.matches(line.sku, line.category))


@given(order=orders_st(), five_off=st.integers(min_value=0, max_value=2))
def test_qualifying_spend_is_between_zero_and_the_qualifying_lines(
    order: Order, five_off: int
) -> None:
    """0 <= qualifying spend <= the sum of non-excluded, non-gift-card line amounts."""
    assume(five_off == 0 or any(not line.gift_card for line in order.lines))
    allocation = allocate(PROGRAM, order, _rewards(five_off))
    outcome = evaluate(PROGRAM, order, allocation, MEMBER)
    ceiling = sum(
        line.qty * line.unit_amount
        for line in order.lines
        if not line.gift_card and not _excluded(line)
    )
    assert 0 <= outcome.qualifying_spend <= ceiling


@given(order=orders_st(), five_off=st.integers(min_value=0, max_value=2))
def test_allocated_discounts_are_capped_line_discounts_plus_capped_order_discounts(
    order: Order, five_off: int
) -> None:
    """Over the non-gift lines, the fixed discounts add up to their line discounts (each line
    capped at its amount) plus min(order discounts, what the lines are worth after those)."""
    assume(five_off == 0 or any(not line.gift_card for line in order.lines))
    allocation = allocate(PROGRAM, order, _rewards(five_off))
    eligible = [line for line in order.lines if not line.gift_card]
    line_part = {
        line.id: min(
            line.qty * line.unit_amount,
            sum(d.amount for d in order.discounts if d.line == line.id),
        )
        for line in eligible
    }
    nets = sum(line.qty * line.unit_amount - line_part[line.id] for line in eligible)
    order_total = sum(d.amount for d in order.discounts if d.line is None) + 500 * five_off
    total = sum(allocation.line_discounts[line.id] for line in eligible)
    assert total == min(order_total, nets) + sum(line_part.values())
    for line in order.lines:  # no line is ever discounted below zero
        assert 0 <= allocation.line_discounts[line.id] <= line.qty * line.unit_amount


@given(order=orders_st(), refunded=st.data())
def test_evaluate_is_deterministic(order: Order, refunded: st.DataObject) -> None:
    """The same order, allocation, standing and refunds give equal outcomes, every time."""
    gone = {
        line.id: refunded.draw(st.integers(min_value=0, max_value=line.qty), label=line.id)
        for line in order.lines
    }
    first = evaluate(PROGRAM, order, allocate(PROGRAM, order), MEMBER, gone)
    second = evaluate(PROGRAM, order, allocate(PROGRAM, order), MEMBER, dict(gone))
    assert first == second
    assert allocate(PROGRAM, order) == allocate(PROGRAM, order)


@given(order=orders_st(), five_off=st.integers(min_value=0, max_value=2))
def test_base_points_are_floor_of_spend_times_ten(order: Order, five_off: int) -> None:
    """Under burrito-rewards (10 points per 1.00, floor): base = floor(spend x 10 / 100)."""
    assume(five_off == 0 or any(not line.gift_card for line in order.lines))
    outcome = evaluate(PROGRAM, order, allocate(PROGRAM, order, _rewards(five_off)), MEMBER)
    base = [award for award in outcome.awards if award.rule == "base"]
    assert len(base) == 1
    assert base[0].points == (outcome.qualifying_spend * 10) // 100
    assert outcome.visit == (outcome.qualifying_spend >= 500)  # min_spend 5.00, no other visit


@given(order=orders_st())
def test_a_fully_refunded_order_earns_nothing_and_is_no_visit(order: Order) -> None:
    """Refunding every unit of every line: 0 points, 0 spend, no visit, no promotion used."""
    allocation = allocate(PROGRAM, order)
    outcome = evaluate(
        PROGRAM, order, allocation, MEMBER, {line.id: line.qty for line in order.lines}
    )
    assert outcome.points == 0
    assert outcome.qualifying_spend == 0
    assert outcome.visit is False
    assert outcome.promotions == frozenset()


@given(order=orders_st(), data=st.data())
def test_refunding_more_never_raises_spend_or_base_points(
    order: Order, data: st.DataObject
) -> None:
    """Growing the refunded quantities one line at a time never raises spend or base points."""
    allocation = allocate(PROGRAM, order)
    refunded = dict.fromkeys((line.id for line in order.lines), 0)
    before = evaluate(PROGRAM, order, allocation, MEMBER, refunded)
    for line in data.draw(st.permutations(list(order.lines)), label="refund order"):
        refunded[line.id] = data.draw(st.integers(min_value=0, max_value=line.qty), label=line.id)
        after = evaluate(PROGRAM, order, allocation, MEMBER, dict(refunded))
        assert after.qualifying_spend <= before.qualifying_spend
        assert _base(after) <= _base(before)
        before = after


def _base(outcome: Outcome) -> int:
    return sum(int(award.points) for award in outcome.awards if award.rule == "base")


@given(order=orders_st(), offset=st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1))
def test_evaluation_does_not_depend_on_the_offset_the_time_is_written_in(
    order: Order, offset: int
) -> None:
    """The same instant written in another UTC offset gives the same outcome."""
    zone = timezone(timedelta(minutes=offset))
    moved = order.with_parts(at=order.at.astimezone(zone))
    allocation = allocate(PROGRAM, order)
    assert evaluate(PROGRAM, order, allocation, MEMBER) == evaluate(
        PROGRAM, moved, allocation, MEMBER
    )


CHICAGO = ZoneInfo("America/Chicago")
RATES = ["10", "1", "2.5", "0.1", "7.25", "1.333", "0.01"]


@lru_cache(maxsize=64)
def _variant(points_per_unit: str, rounding: str) -> Program:
    """burrito-rewards with another earn rate and rounding mode."""
    text = EXAMPLE_PROGRAM.read_text()
    text = text.replace("points_per_unit: 10", f'points_per_unit: "{points_per_unit}"', 1)
    text = text.replace("rounding: floor", f"rounding: {rounding}", 1)
    program = parse_program(text)
    assert program.earn.points_per_unit == Decimal(points_per_unit)
    return program


@given(
    order=orders_st(),
    rate=st.sampled_from(RATES),
    mode=st.sampled_from(sorted(DECIMAL_MODES)),
)
def test_base_points_follow_the_rate_and_rounding_exactly(
    order: Order, rate: str, mode: str
) -> None:
    """Rule 2 for any exact rate: base = rounding(spend/100 x points_per_unit), no float anywhere."""
    program = _variant(rate, mode)
    outcome = evaluate(program, order, allocate(program, order), MEMBER)
    exact = Decimal(outcome.qualifying_spend) / 100 * Decimal(rate)
    assert _base(outcome) == int(exact.quantize(Decimal(1), rounding=DECIMAL_MODES[mode]))


@given(order=orders_st(), tier=st.sampled_from(["member", "gold", "platinum"]))
def test_tier_bonus_is_rounded_base_times_multiplier_minus_one(order: Order, tier: str) -> None:
    """Rule 3: the tier bonus is floor(base x (multiplier - 1)); member (x1) gets no tier award."""
    outcome = evaluate(PROGRAM, order, allocate(PROGRAM, order), Standing(tier=tier))
    base = _base(outcome)
    bonus = [award.points for award in outcome.awards if award.rule == "tier"]
    multiplier = PROGRAM.levels_by_id[tier].multiplier
    if multiplier == 1:
        assert bonus == []
    else:
        assert bonus == [floor(base * (Fraction(multiplier) - 1))]


# Tuesdays of March 2026 (double-tuesday: 14:00-17:00 local, gold and platinum, x2).
promo_times = st.builds(
    lambda day, minute: datetime(2026, 3, day, 14, 0, tzinfo=CHICAGO) + timedelta(minutes=minute),
    st.sampled_from([3, 10, 17, 24, 31]),
    st.integers(min_value=0, max_value=3 * 60 - 1),
)


@given(
    order=orders_st(),
    at=promo_times,
    tier=st.sampled_from(["member", "gold", "platinum"]),
    uses=st.integers(min_value=0, max_value=6),
)
def test_double_tuesday_adds_base_once_and_does_not_compound(
    order: Order, at: datetime, tier: str, uses: int
) -> None:
    """Rules 3-4: inside its window, for gold/platinum under its limit, double-tuesday gives a
    bonus of base x (2 - 1) = base, next to (not on top of) the tier bonus; otherwise none."""
    placed = order.with_parts(at=at.astimezone(UTC))
    standing = Standing(tier=tier, promotion_uses={"double-tuesday": uses})
    outcome = evaluate(PROGRAM, placed, allocate(PROGRAM, placed), standing)
    base = _base(outcome)
    promo = [award.points for award in outcome.awards if award.rule == "promotion:double-tuesday"]
    applies = tier != "member" and uses < 4 and base > 0
    assert promo == ([base] if applies else [])
    assert outcome.promotions == (frozenset({"double-tuesday"}) if applies else frozenset())
    tier_bonus = sum(award.points for award in outcome.awards if award.rule == "tier")
    item_bonus = sum(award.points for award in outcome.awards if award.rule.startswith("item"))
    assert outcome.points == base + tier_bonus + sum(promo) + item_bonus


@given(order=orders_st(), minute=st.integers(min_value=0, max_value=24 * 60 - 1))
def test_double_tuesday_never_applies_outside_its_hours(order: Order, minute: int) -> None:
    """Outside 14:00-17:00 local on a March Tuesday, no promotion bonus even for platinum."""
    local = datetime(2026, 3, 10, 0, 0, tzinfo=CHICAGO) + timedelta(minutes=minute)
    placed = order.with_parts(at=local.astimezone(UTC))
    outcome = evaluate(PROGRAM, placed, allocate(PROGRAM, placed), Standing(tier="platinum"))
    inside = 14 * 60 <= minute < 17 * 60
    if not inside:
        assert outcome.promotions == frozenset()


# --------------------------------------------------------------------------- compiled item rules


EXAMPLE_SOURCE = load_document(EXAMPLE_PROGRAM.read_text())[0]
NAMES = ["BURR", "TACO", "GUAC", "CHEESE", "CHIPS", "BEER"]
GROUPS = ["burrito", "taco", "add_on", "side", "alcohol"]


@st.composite
def item_rules_st(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1-8 item rules naming overlapping skus and categories, some capped."""
    rules = []
    for n in range(draw(st.integers(min_value=1, max_value=8))):
        skus = draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))
        groups = draw(st.lists(st.sampled_from(GROUPS), min_size=0 if skus else 1, max_size=2))
        rule: dict[str, Any] = {
            "id": f"r{n}",
            "match": {"skus": skus, "categories": sorted(set(groups))},
            "points_per_unit": draw(st.sampled_from([1, 2, 5, "0.5", "2.5"])),
        }
        if draw(st.booleans()):
            rule["max_units_per_order"] = draw(st.integers(min_value=1, max_value=4))
        rules.append(rule)
    return rules


def _scanned_item_bonuses(
    program: Program, order: Order, gone: dict[str, int]
) -> list[tuple[str, int, int]]:
    """Each rule against each line and modifier, the slow way: (rule, units counted, points)."""
    found = []
    for rule in program.item_bonuses:
        units = 0
        for line in order.lines:
            kept = line.qty - gone.get(line.id, 0)
            if kept <= 0 or line.gift_card or program.earn.exclude.matches(line.sku, line.category):
                continue
            if rule.match.matches(line.sku, line.category):
                units += kept
            units += sum(
                m.qty * kept for m in line.modifiers if rule.match.matches(m.sku, m.category)
            )
        if units:
            counted = min(units, rule.max_units_per_order or units)
            numerator, denominator = rule.rate
            found.append((rule.id, counted, round_ratio(numerator * counted, denominator, "floor")))
    return found


@given(rules=item_rules_st(), order=orders_st(), data=st.data())
def test_compiled_item_rules_count_what_a_scan_of_every_rule_counts(
    rules: list[dict[str, Any]], order: Order, data: st.DataObject
) -> None:
    """The sku/category index gives each rule the units, cap and points (in rule order) that
    checking every rule against every line and modifier gives; a line naming a rule by both
    sku and category counts once."""
    source = EXAMPLE_SOURCE
    program = program_from_data({**source, "item_bonuses": rules})
    gone = {
        line.id: data.draw(st.integers(min_value=0, max_value=line.qty), label=line.id)
        for line in order.lines
    }
    outcome = evaluate(program, order, allocate(program, order), MEMBER, gone)
    got = [
        (
            a.rule.removeprefix("item_bonus:"),
            int(a.explanation.split(": ")[1].split(" ")[0]),
            a.points,
        )
        for a in outcome.awards
        if a.rule.startswith("item_bonus:")
    ]
    assert got == _scanned_item_bonuses(program, order, gone)


def test_a_rule_naming_a_line_by_sku_and_category_counts_it_once() -> None:
    source = EXAMPLE_SOURCE
    rule = {
        "id": "both",
        "match": {"skus": ["BURR"], "categories": ["burrito"]},
        "points_per_unit": 3,
    }
    program = program_from_data({**source, "item_bonuses": [rule]})
    order = Order(
        id="o1",
        at=datetime(2026, 3, 2, 18, tzinfo=UTC),
        lines=(
            Line("l1", "BURR", "burrito", 2, 950, (Modifier("BURR", "burrito", 1, 0),)),
            Line("l2", "TACO", "burrito", 1, 400),
        ),
    )
    outcome = evaluate(program, order, allocate(program, order), MEMBER)
    bonus = [a for a in outcome.awards if a.rule == "item_bonus:both"]
    # l1: 2 units + its modifier 1 x 2 = 4; l2 by category: 1; 5 units x 3 points.
    assert [(a.points, a.explanation) for a in bonus] == [
        (15, "Item bonus both: 5 units x 3 = 15.")
    ]
