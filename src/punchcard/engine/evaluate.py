"""Evaluate an order under a program: qualifying spend, points by rule, visit (rules 1-7, 10, 12).

`allocate` fixes every discount on every line (done at close and at each edit);
`evaluate` turns an order, its fixed discounts, its refunded quantities and what the
member's history says into an `Outcome` whose every figure is explained. Both are
pure: the same inputs give the same outcome, with no clock and no database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction

from punchcard.engine.money import format_money, round_half_up, round_ratio
from punchcard.engine.orders import Line, Order
from punchcard.engine.programs import WEEKDAYS, Program, Promotion, Reward
from punchcard.errors import InvalidInput

# The points one order can earn, all awards together. A rate or multiplier of up to 1,000,000
# on a total of up to 10,000,000,000.00 could earn 10^22; at 10^12 a balance needs millions
# of maximal orders to near 2^63, so no posting can ever overflow the ledger.
MAX_ORDER_POINTS = 10**12


class RewardMatchesNothing(ValueError):
    """A reward applied to an order that has nothing it could discount."""

    def __init__(self, reward_id: str) -> None:
        super().__init__(f"reward {reward_id} matches nothing in the order")
        self.reward_id = reward_id


@dataclass(frozen=True, slots=True)
class Allocation:
    """Every discount on each line, fixed when the order closes (or is edited)."""

    line_discounts: Mapping[str, int]  # line id -> total discount on the line, cents
    explanations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Standing:
    """What the member's history says that the order's evaluation depends on."""

    tier: str  # the member's tier at the order's placed time
    promotion_uses: Mapping[str, int] = field(default_factory=dict)  # by other orders
    other_visits_that_day: int = 0
    held_promotions: frozenset[str] = frozenset()  # this order holds them already
    held_visit: bool = False
    gains: bool = True  # False on refunds: nothing new may apply


@dataclass(frozen=True, slots=True)
class Award:
    """Points from one rule, with what it saw and how it counted."""

    rule: str  # base | tier | promotion:ID | item_bonus:ID
    points: int
    explanation: str


@dataclass(frozen=True, slots=True)
class Outcome:
    qualifying_spend: int  # cents
    awards: tuple[Award, ...]
    visit: bool
    visit_day: date
    promotions: frozenset[str]  # promotions that gave points (uses)
    notes: tuple[str, ...]

    @property
    def points(self) -> int:
        return sum(award.points for award in self.awards)

    def explain(self) -> list[str]:
        """The outcome as sentences a support agent could read to a guest."""
        return [*self.notes, *(a.explanation for a in self.awards)]


def allocate(program: Program, order: Order, rewards: Sequence[Reward] = ()) -> Allocation:
    """Fix each line's discount: its own line discounts, free items, its share of order discounts."""
    lines = order.lines
    gross = {line.id: line.qty * line.unit_amount for line in lines}
    taken = dict.fromkeys(gross, 0)
    notes: list[str] = []
    for discount in order.discounts:
        if discount.line is not None:
            room = gross[discount.line] - taken[discount.line]
            taken[discount.line] += min(discount.amount, room)
    free_units = dict.fromkeys(gross, 0)
    for reward in rewards:
        free = reward.discount.free_item
        if free is None:
            continue
        best: Line | None = None
        for line in lines:
            if line.gift_card or not free.matches(line.sku, line.category):
                continue
            if free_units[line.id] >= line.qty:
                continue
            if best is None or line.unit_amount > best.unit_amount:
                best = line
        if best is None:
            raise RewardMatchesNothing(reward.id)
        cap = reward.discount.max_value
        value = best.unit_amount if cap is None else min(best.unit_amount, cap)
        value = min(value, gross[best.id] - taken[best.id])
        free_units[best.id] += 1
        taken[best.id] += value
        notes.append(f"Reward {reward.id} takes {format_money(value)} off line {best.id}.")
    eligible = [line for line in lines if not line.gift_card]
    net = {line.id: gross[line.id] - taken[line.id] for line in eligible}
    base = sum(net.values())
    order_total = sum(d.amount for d in order.discounts if d.line is None)
    for reward in rewards:
        offer = reward.discount
        if offer.free_item is not None:
            continue
        if not eligible:
            raise RewardMatchesNothing(reward.id)
        if offer.amount_off is not None:
            order_total += offer.amount_off
            notes.append(
                f"Reward {reward.id} takes {format_money(offer.amount_off)} off the order."
            )
        elif offer.percent_off is not None:
            value = round_half_up(Fraction(base) * Fraction(offer.percent_off) / 100)
            order_total += value
            notes.append(
                f"Reward {reward.id} takes {offer.percent_off}% of {format_money(base)}"
                f" = {format_money(value)} off the order."
            )
    order_total = min(order_total, base)
    shares = spread(order_total, [net[line.id] for line in eligible])
    for line, share in zip(eligible, shares, strict=True):
        taken[line.id] += share
    if order_total:
        notes.append(
            f"Order discounts of {format_money(order_total)} are spread over the lines: "
            + ", ".join(
                f"{line.id} {format_money(s)}" for line, s in zip(eligible, shares, strict=True)
            )
            + "."
        )
    return Allocation(line_discounts=taken, explanations=tuple(notes))


def spread(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` in proportion to `weights` by largest remainder; ties go to the earlier."""
    whole = sum(weights)
    if whole == 0 or total == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def line_remaining(line: Line, discount: int, refunded: int) -> int:
    """What is left of a line after refunds: refunded units take their part of its discount."""
    kept = line.qty - refunded
    if kept <= 0:
        return 0
    return max(0, line.unit_amount * kept - (discount - taken_back(line, discount, refunded)))


def taken_back(line: Line, discount: int, refunded: int) -> int:
    """The part of a line's fixed discount its refunded units take with them (rule 10)."""
    return round_half_up(Fraction(discount * refunded, line.qty)) if refunded else 0


def evaluate(
    program: Program,
    order: Order,
    allocation: Allocation,
    standing: Standing,
    refunded: Mapping[str, int] | None = None,
) -> Outcome:
    """The points, visit and promotion uses of a closed order under `program`."""
    refunded = refunded or {}
    earn = program.earn
    exclude = earn.exclude
    rounding = earn.rounding
    local = order.at.astimezone(program.zone).replace(tzinfo=None)
    notes = list(allocation.explanations)
    spend = 0
    kept_units: dict[str, int] = {}
    earning: list[tuple[Line, int]] = []  # lines that can earn, with their units kept
    returns: list[str] = []  # how refunds changed the lines that count
    for line in order.lines:
        gone = refunded.get(line.id, 0)
        kept_units[line.id] = line.qty - gone
        if line.gift_card or exclude.matches(line.sku, line.category):
            continue
        earning.append((line, line.qty - gone))
        discount = allocation.line_discounts.get(line.id, 0)
        spend += line_remaining(line, discount, gone)
        if gone:
            returns.append(_refund_note(line, discount, gone))
    fully_refunded = bool(order.lines) and all(v == 0 for v in kept_units.values())
    day = local.date()
    if fully_refunded:
        ending = "its visit is withdrawn" if standing.held_visit else "is no visit"
        notes.append(f"The order is fully refunded: it earns nothing and {ending}.")
        return Outcome(0, (), False, day, frozenset(), tuple(notes))
    notes.extend(returns)
    notes.append(
        f"Qualifying spend is {format_money(spend)} (tax, tip, fees and excluded lines left out)."
    )

    awards: list[Award] = []
    numerator, denominator = earn.rate
    base = round_ratio(spend * numerator, 100 * denominator, rounding)
    awards.append(
        Award(
            "base", base, f"Base: {format_money(spend)} x {earn.points_per_unit} points = {base}."
        )
    )
    level = program.levels_by_id.get(standing.tier)
    if level is not None and level.multiplier != 1:
        share, whole = level.bonus_rate
        bonus = round_ratio(base * share, whole, rounding)
        awards.append(
            Award(
                "tier",
                bonus,
                f"Tier {level.id} x{level.multiplier}: {bonus} bonus points on {base}.",
            )
        )
    used: set[str] = set()
    for promo in program.promotions:
        held = promo.id in standing.held_promotions
        if not held and not standing.gains:
            continue
        if not _promotion_applies(promo, local, standing.tier, spend):
            if held:  # placed time, tier and version are kept: only spend can have changed
                minimum = format_money(promo.min_spend)
                notes.append(
                    f"Promotion {promo.id} no longer applies: spend is below its {minimum} minimum."
                )
            continue
        limit = promo.limit_per_member
        if not held and limit is not None and standing.promotion_uses.get(promo.id, 0) >= limit:
            notes.append(f"Promotion {promo.id} is used up ({limit} orders per member).")
            continue
        if promo.multiplier is not None:
            share, whole = promo.bonus_rate
            points = round_ratio(base * share, whole, rounding)
            text = f"Promotion {promo.id} x{promo.multiplier}: {points} bonus points on {base}."
        else:
            points = promo.bonus_points or 0
            text = f"Promotion {promo.id}: {points} bonus points."
        if points > 0:
            used.add(promo.id)
            awards.append(Award(f"promotion:{promo.id}", points, text))
        elif held:
            notes.append(f"Promotion {promo.id} no longer gives points: 0 bonus points on {base}.")
    awards.extend(_item_bonuses(program, earning))
    if sum(award.points for award in awards) > MAX_ORDER_POINTS:
        # InvalidInput, not OrderFormatError: the services turn only this one into 422 here,
        # before anything is stored (quote, close, edit, inbound events).
        raise InvalidInput(f"order: earns more than {MAX_ORDER_POINTS} points")
    visit = _is_visit(program, spend, standing, notes)
    return Outcome(spend, tuple(awards), visit, day, frozenset(used), tuple(notes))


def _item_bonuses(program: Program, earning: Sequence[tuple[Line, int]]) -> list[Award]:
    """Each item rule's units (kept line units, and modifier units per kept line), in rule order."""
    rules = program.item_bonuses
    if not rules:
        return []
    index = program.item_bonus_index
    per_rule = [0] * len(rules)
    for line, kept in earning:
        if kept <= 0:
            continue
        for position in index.hits(line.sku, line.category):
            per_rule[position] += kept
        for mod in line.modifiers:
            for position in index.hits(mod.sku, mod.category):
                per_rule[position] += mod.qty * kept
    awards = []
    rounding = program.earn.rounding
    for rule, units in zip(rules, per_rule, strict=True):
        if not units:
            continue
        cap = rule.max_units_per_order
        counted = units if cap is None else min(units, cap)
        numerator, denominator = rule.rate
        points = round_ratio(numerator * counted, denominator, rounding)
        capped = f" (capped at {cap})" if counted < units else ""
        awards.append(
            Award(
                f"item_bonus:{rule.id}",
                points,
                f"Item bonus {rule.id}: {counted} units{capped} x {rule.points_per_unit} = {points}.",
            )
        )
    return awards


def _refund_note(line: Line, discount: int, refunded: int) -> str:
    text = f"Line {line.id}: {refunded} of {line.qty} units refunded"
    if not discount:
        return f"{text}."
    back = taken_back(line, discount, refunded)
    return (
        f"{text}, taking back {format_money(back)} of its {format_money(discount)} discount"
        f" ({format_money(discount - back)} stays on the units kept)."
    )


def _is_visit(program: Program, spend: int, standing: Standing, notes: list[str]) -> bool:
    """A re-evaluation keeps a held visit while its spend qualifies, and a refund gains none:
    either way the sentence says which, so a visit kept or withdrawn is explained too."""
    rule = program.visits
    minimum = format_money(rule.min_spend)
    if spend < rule.min_spend:
        if standing.held_visit:
            notes.append(f"The visit is withdrawn: spend is now below the {minimum} minimum.")
        else:
            notes.append(f"No visit: spend is below the {minimum} minimum.")
        return False
    if standing.held_visit:
        notes.append(
            f"The order is still a visit: {format_money(spend)} reaches the {minimum} minimum."
        )
        return True
    if not standing.gains:
        notes.append("No visit: the order was not one, and a refund can not make it one.")
        return False
    if rule.max_per_day is not None and standing.other_visits_that_day >= rule.max_per_day:
        notes.append(f"No visit: {rule.max_per_day} visit(s) already counted that day.")
        return False
    notes.append("The order counts as a visit.")
    return True


def _promotion_applies(promo: Promotion, local: datetime, tier: str, spend: int) -> bool:
    if not promo.starts <= local < promo.ends:
        return False
    day = local.date()
    if promo.hours is not None:
        start, end, now = promo.hours.start, promo.hours.end, local.time()
        if start < end:
            if not start <= now < end:
                return False
        elif now < end:
            day -= timedelta(days=1)  # past midnight: the window belongs to the day it starts
        elif now < start:
            return False
    if promo.days is not None and WEEKDAYS[day.weekday()] not in promo.days:
        return False
    if promo.tiers is not None and tier not in promo.tiers:
        return False
    return spend >= promo.min_spend
