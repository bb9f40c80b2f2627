"""Property-based tests of points lots, ledger entries and calendar months (rule 11).

A member's posted balance and lots are modelled in plain Python and driven only by the
functions of `punchcard.ledger.lots` (split_earning, take_oldest, plan_clawback), the way
the service layer uses them. After every step the guarantees in the module's docstring hold.
"""

from __future__ import annotations

import calendar
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from punchcard.ledger.entries import Entry, UnbalancedTransaction, transfer
from punchcard.ledger.lots import Lot, add_months, plan_clawback, split_earning, take_oldest

ZONES = ["America/Chicago", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
ORDERS = st.integers(min_value=1, max_value=6)
POINTS = st.integers(min_value=1, max_value=2_000)


# --------------------------------------------------------------------------- lots


class LotsMachine(RuleBasedStateMachine):
    """One member's posted balance and lots, under one `negative_balance` mode."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "allow"
        self.balance = 0
        self.lots: list[Lot] = []
        self.next_id = 1
        self.seq = 0

    @initialize(mode=st.sampled_from(["allow", "clamp"]))
    def choose_mode(self, mode: str) -> None:
        """A program has one negative_balance mode for the whole run."""
        self.mode = mode

    # -- helpers

    def _take(self, parts: list[tuple[int, int]]) -> None:
        by_id = {lot.id: lot for lot in self.lots}
        for lot_id, part in parts:
            lot = by_id[lot_id]
            assert 0 < part <= lot.remaining, "a lot gives a positive part it has"
            by_id[lot_id] = replace(lot, remaining=lot.remaining - part)
        self.lots = [by_id[lot.id] for lot in self.lots]

    def _lot_total(self) -> int:
        return sum(lot.remaining for lot in self.lots)

    def _check_ids_unique(self, parts: list[tuple[int, int]]) -> None:
        ids = [lot_id for lot_id, _ in parts]
        assert len(ids) == len(set(ids)), "each lot is taken from at most once"

    # -- rules

    @rule(points=POINTS, order=st.one_of(st.none(), ORDERS))
    def earn(self, points: int, order: int | None) -> None:
        """An earning first pays any debt; only the rest forms a lot."""
        split = split_earning(self.balance, points)
        debt = max(0, -self.balance)
        assert split.pays_debt == min(debt, points)
        assert split.pays_debt + split.lot == points
        assert split.lot >= 0
        self.balance += points
        if split.lot:
            self.lots.append(Lot(self.next_id, order, split.lot, self.seq))
            self.next_id += 1
            self.seq += 1

    @rule(amount=POINTS)
    def spend(self, amount: int) -> None:
        """Spending (a reward) takes the oldest lots first, only when the balance covers it."""
        parts = take_oldest(self.lots, amount)
        self._check_ids_unique(parts)
        taken = sum(part for _, part in parts)
        assert taken <= amount
        assert taken <= max(0, self.balance), "spending never takes more than the balance"
        if max(0, self.balance) < amount:
            return  # the caller refuses: insufficient points; nothing changes
        assert taken == amount, "when the balance covers it, the lots do too"
        # oldest first: every lot before the last one touched is emptied completely
        live = sorted(
            (lot for lot in self.lots if lot.remaining > 0), key=lambda lot: lot.posted_seq
        )
        assert [lot_id for lot_id, _ in parts] == [lot.id for lot in live[: len(parts)]]
        for lot, (_, part) in zip(live, parts[:-1], strict=False):
            assert part == lot.remaining
        self._take(parts)
        self.balance -= amount

    @rule(amount=POINTS, order=ORDERS)
    def claw_back(self, amount: int, order: int) -> None:
        """A clawback takes the order's own lots first, then the oldest; the rest is debt or dropped."""
        own_before = sum(lot.remaining for lot in self.lots if lot.order_id == order)
        total_before = self._lot_total()
        plan = plan_clawback(self.lots, amount, order, self.mode)
        self._check_ids_unique(plan.from_lots)
        taken = sum(part for _, part in plan.from_lots)
        assert taken == min(amount, total_before)
        assert taken + plan.debt + plan.dropped == amount
        if self.mode == "allow":
            assert plan.dropped == 0 and plan.posted == amount
        else:
            assert plan.debt == 0 and plan.posted == taken
        # the order's own lots come first, in full, before any other lot gives anything
        own_ids = {lot.id for lot in self.lots if lot.order_id == order}
        from_own = [part for lot_id, part in plan.from_lots if lot_id in own_ids]
        assert sum(from_own) == min(amount, own_before)
        firsts = [lot_id in own_ids for lot_id, _ in plan.from_lots]
        assert firsts == sorted(firsts, reverse=True), "own lots before the others"
        # then the oldest of the others
        others = sorted(
            (lot for lot in self.lots if lot.remaining > 0 and lot.id not in own_ids),
            key=lambda lot: lot.posted_seq,
        )
        other_ids = [lot_id for lot_id, _ in plan.from_lots if lot_id not in own_ids]
        assert other_ids == [lot.id for lot in others[: len(other_ids)]]
        self._take(plan.from_lots)
        self.balance -= plan.posted

    @precondition(lambda self: any(lot.remaining for lot in self.lots))
    @rule(data=st.data())
    def claw_back_an_existing_order(self, data: st.DataObject) -> None:
        """Same as claw_back, aimed at an order that still has a lot with something left."""
        order = data.draw(
            st.sampled_from(
                sorted({lot.order_id for lot in self.lots if lot.remaining and lot.order_id}) or [1]
            ),
            label="order",
        )
        self.claw_back(data.draw(POINTS, label="amount"), order)

    # -- invariants

    @invariant()
    def balance_matches_lots(self) -> None:
        """Balance >= 0: it equals the sum of what is left of the lots; below zero: no lot has any."""
        if self.balance >= 0:
            assert self.balance == self._lot_total()
        else:
            assert all(lot.remaining == 0 for lot in self.lots)

    @invariant()
    def lots_never_negative(self) -> None:
        """No lot is ever below zero."""
        assert all(lot.remaining >= 0 for lot in self.lots)

    @invariant()
    def clamp_never_goes_below_zero(self) -> None:
        """With negative_balance: clamp the balance never goes below zero."""
        if self.mode == "clamp":
            assert self.balance >= 0


TestLots = LotsMachine.TestCase
TestLots.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


@given(
    lots=st.lists(st.tuples(st.one_of(st.none(), ORDERS), st.integers(0, 500)), max_size=8),
    amount=st.integers(min_value=0, max_value=3_000),
    order=st.one_of(st.none(), ORDERS),
)
def test_take_oldest_never_takes_more_than_asked_or_there(
    lots: list[tuple[int | None, int]], amount: int, order: int | None
) -> None:
    """take_oldest gives at most `amount`, at most what each lot has, all of it when there is."""
    values = [Lot(i + 1, o, r, i) for i, (o, r) in enumerate(lots)]
    parts = take_oldest(values, amount, first_from_order=order)
    have = {lot.id: lot.remaining for lot in values}
    assert all(0 < part <= have[lot_id] for lot_id, part in parts)
    assert sum(part for _, part in parts) == min(amount, sum(have.values()))


# --------------------------------------------------------------------------- entries


accounts = st.sampled_from(["earned", "redeemed", "member:1", "member:2", "card:1", "spent"])


@given(postings=st.lists(st.tuples(accounts, st.integers(-(10**6), 10**6)), min_size=1, max_size=6))
def test_entry_accepts_exactly_balanced_nonzero_postings(postings: list[tuple[str, int]]) -> None:
    """An Entry exists only when its postings sum to zero and none of them is zero."""
    ok = sum(a for _, a in postings) == 0 and all(a != 0 for _, a in postings)
    if ok:
        entry = Entry("points:p", "earn", tuple(postings))
        assert sum(a for _, a in entry.postings) == 0
    else:
        with pytest.raises(UnbalancedTransaction):
            Entry("points:p", "earn", tuple(postings))


@given(
    postings=st.lists(st.tuples(accounts, st.integers(1, 10**6)), min_size=1, max_size=5),
    zero_at=st.integers(min_value=0, max_value=5),
)
def test_entry_rejects_a_zero_posting_even_when_balanced(
    postings: list[tuple[str, int]], zero_at: int
) -> None:
    """A zero posting is rejected even among postings that sum to zero."""
    balanced = [*postings, ("earned", -sum(a for _, a in postings))]
    balanced.insert(min(zero_at, len(balanced)), ("spent", 0))
    with pytest.raises(UnbalancedTransaction):
        Entry("money:USD", "issue", tuple(balanced))


@given(postings=st.lists(st.tuples(accounts, st.integers(1, 10**6)), min_size=1, max_size=5))
def test_entry_rejects_unbalanced_postings(postings: list[tuple[str, int]]) -> None:
    """Postings off by any amount are rejected."""
    with pytest.raises(UnbalancedTransaction):
        Entry("money:USD", "issue", tuple(postings))


@given(source=accounts, target=accounts, amount=st.integers(min_value=1, max_value=10**12))
def test_transfer_makes_a_balanced_pair(source: str, target: str, amount: int) -> None:
    """transfer moves `amount` out of source and into target: two postings summing to zero."""
    entry = transfer("points:p", "earn", source, target, amount, "ref")
    assert entry.postings == ((source, -amount), (target, amount))
    assert entry.asset == "points:p" and entry.kind == "earn" and entry.reference == "ref"


@given(amount=st.integers(max_value=0))
def test_transfer_of_nothing_or_less_is_rejected(amount: int) -> None:
    """A transfer moves a positive amount."""
    with pytest.raises(UnbalancedTransaction):
        transfer("points:p", "earn", "earned", "member:1", amount)


# --------------------------------------------------------------------------- add_months


local_times = st.times()
zones = st.sampled_from(ZONES).map(ZoneInfo)


def _moment(day: date, at: time, zone: ZoneInfo) -> datetime:
    """A real instant whose local date in `zone` is `day` (at `at`, or the nearest existing time)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def _exists(wall: datetime, zone: ZoneInfo) -> bool:
    """Whether the naive wall time `wall` happens in `zone` (it does not in a spring-forward gap)."""
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


@given(year=st.integers(min_value=1990, max_value=2100), at=local_times, zone=zones)
def test_january_31_plus_one_month_is_the_end_of_february(
    year: int, at: time, zone: ZoneInfo
) -> None:
    """Jan 31 + 1 month is Feb 28, or Feb 29 in a leap year, at the same local wall time."""
    moment = _moment(date(year, 1, 31), at, zone)
    wall = moment.astimezone(zone)
    result = add_months(moment, 1, zone)
    last = 29 if calendar.isleap(year) else 28
    assert (result.year, result.month, result.day) == (year, 2, last)
    assert result.time() == wall.time()


@given(
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)),
    at=local_times,
    months=st.integers(min_value=0, max_value=240),
    zone=zones,
)
def test_add_months_keeps_the_local_time_of_day(
    day: date, at: time, months: int, zone: ZoneInfo
) -> None:
    """The result is at the same local wall time, and is that very time whenever it exists."""
    moment = _moment(day, at, zone)
    wall = moment.astimezone(zone)
    result = add_months(moment, months, zone)
    assert result.tzinfo is not None
    assert result.time() == wall.time()
    landed = result.replace(tzinfo=None)
    if _exists(landed, zone):
        assert result.astimezone(zone).replace(tzinfo=None) == landed
    index = wall.month - 1 + months
    assert (result.year, result.month) == (wall.year + index // 12, index % 12 + 1)
    assert result.day == min(wall.day, calendar.monthrange(result.year, result.month)[1])
    assert result >= moment or months == 0


@given(
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)),
    at=local_times,
    zone=zones,
)
def test_twelve_months_is_the_same_day_next_year(day: date, at: time, zone: ZoneInfo) -> None:
    """+12 months lands on the same month and day a year later; Feb 29 lands on Feb 28."""
    moment = _moment(day, at, zone)
    wall = moment.astimezone(zone)
    result = add_months(moment, 12, zone)
    if (wall.month, wall.day) == (2, 29):
        assert (result.year, result.month, result.day) == (wall.year + 1, 2, 28)
    else:
        assert (result.year, result.month, result.day) == (wall.year + 1, wall.month, wall.day)
    assert result.time() == wall.time()


@given(
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)),
    at=local_times,
    zone=zones,
)
def test_zero_months_is_the_same_instant(day: date, at: time, zone: ZoneInfo) -> None:
    """Adding no months gives back the same instant (also in the repeated hour of a DST change).

    Compared in UTC: Python's == between datetimes of different tzinfo is always False when
    one of them is an ambiguous wall time (PEP 495), even for the same instant.
    """
    moment = _moment(day, at, zone)
    assert add_months(moment, 0, zone).astimezone(UTC) == moment


def test_add_months_keeps_the_second_occurrence_of_a_repeated_hour() -> None:
    """01:30 CST (the second 01:30 of 2026-11-01 in Chicago) + 0 months is that same instant."""
    chicago = ZoneInfo("America/Chicago")
    second = datetime(2026, 11, 1, 7, 30, tzinfo=UTC)  # 01:30 CST, after the clocks went back
    assert second.astimezone(chicago).fold == 1
    assert add_months(second, 0, chicago).astimezone(UTC) == second


def test_add_months_across_a_dst_change_keeps_the_wall_clock() -> None:
    """Jan 15 09:00 CST + 6 months is Jul 15 09:00 CDT: an hour less in UTC terms, same wall time."""
    chicago = ZoneInfo("America/Chicago")
    moment = datetime(2026, 1, 15, 9, 0, tzinfo=chicago)
    result = add_months(moment, 6, chicago)
    assert result.astimezone(chicago).replace(tzinfo=None) == datetime(2026, 7, 15, 9, 0)
    elapsed = result.astimezone(UTC) - moment.astimezone(UTC)
    assert elapsed == timedelta(days=181) - timedelta(hours=1)
