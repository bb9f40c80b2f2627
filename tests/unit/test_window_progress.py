"""What an order has added to a tier window: never below zero, never more than the order
holds now, and all of it while the order stays in one window (rule 10's full change)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from punchcard.engine.members import InWindow, restate

YEARS = [datetime(2026 + i, 1, 1, tzinfo=UTC) for i in range(4)]
AMOUNTS = st.tuples(
    st.integers(0, 10**9), st.integers(0, 1), st.integers(0, 10**9)
)  # points, visit, spend


def _parts(w: InWindow) -> tuple[int, int, int]:
    return w.points, w.visit, w.spend


@given(AMOUNTS, st.lists(st.tuples(st.integers(0, 3), AMOUNTS), max_size=30))
def test_an_order_never_leaves_a_window_more_than_it_holds(
    posted: tuple[int, int, int], changes: list[tuple[int, tuple[int, int, int]]]
) -> None:
    added, held, year = InWindow(YEARS[0], *posted), posted, 0
    net = {YEARS[0]: list(posted)}  # each window's progress from this order
    for step, amounts in changes:
        year = min(3, year + step % 2)  # windows only go forward
        change = [new - old for new, old in zip(amounts, held, strict=True)]
        added, taken = restate(added, YEARS[year], *change)
        window = net.setdefault(YEARS[year], [0, 0, 0])
        for i, (d, t) in enumerate(zip(change, _parts(taken), strict=True)):
            assert 0 <= t <= max(0, -d)  # a loss takes back at most itself
            window[i] += max(0, d) - t
        held = amounts
        assert added.start == YEARS[year]
        assert list(_parts(added)) == window  # what it added is what the window got
        assert all(0 <= a <= h for a, h in zip(_parts(added), held, strict=True))


@given(AMOUNTS, st.lists(AMOUNTS, max_size=30))
def test_in_one_window_every_change_moves_progress_by_all_of_it(
    posted: tuple[int, int, int], changes: list[tuple[int, int, int]]
) -> None:
    added, held = InWindow(YEARS[0], *posted), posted
    for amounts in changes:
        change = [new - old for new, old in zip(amounts, held, strict=True)]
        added, taken = restate(added, YEARS[0], *change)
        assert _parts(taken) == tuple(max(0, -d) for d in change)
        assert _parts(added) == amounts
        held = amounts


def test_the_audits_pump_leaves_the_later_window_nothing() -> None:
    """Posted 100 in 2026; in 2027 edited up 1500, down, up, and the gain refunded."""
    added = InWindow(YEARS[0], 100, 1, 1000)
    added, taken = restate(added, YEARS[1], 1500, 0, 15000)
    assert (added, taken) == (InWindow(YEARS[1], 1500, 0, 15000), InWindow(YEARS[1]))
    added, taken = restate(added, YEARS[1], -1500, 0, -15000)
    assert (added, taken) == (InWindow(YEARS[1]), InWindow(YEARS[1], 1500, 0, 15000))
    added, taken = restate(added, YEARS[1], -100, -1, -1000)  # a full refund of the rest
    assert (added, taken) == (InWindow(YEARS[1]), InWindow(YEARS[1]))  # 2026 is past
