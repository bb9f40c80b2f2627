"""Member-level rules as pure functions: tier progress, tier windows, punch cards (rules 8, 9).

These follow the program version live when they apply, so the caller passes that version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from punchcard.engine.programs import Program


@dataclass(slots=True)
class MemberState:
    tier: str
    progress: int  # points, visits or cents of spend, in the current window
    visits: int  # visits counted in the current window
    punches: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """What a posting did to the member: tier move, punch progress, rewards to issue."""

    tier_from: str | None = None
    tier_to: str | None = None
    punches: tuple[tuple[str, int], ...] = ()
    rewards: tuple[str, ...] = ()  # catalogue reward ids to issue
    # "program_change": the member's tier is not a level of the live version, so the member is
    # placed by progress in that version's levels (no transition table can judge that move).
    reason: str = "threshold"


def progress_of(program: Program, points: int, visit: int, spend: int) -> int:
    """The progress one order contributes under the program's metric."""
    metric = program.tiers.metric
    return points if metric == "points" else visit if metric == "visits" else spend


def add_progress(
    program: Program, state: MemberState, points: int, visit: int, spend: int
) -> Change:
    """Post an order's (or a gain's) progress and visit; the tier only ever moves up here,
    and only when progress rose (a version that lowered a threshold moves no one until a
    posting lifts their progress: a refund or a zero gain is no such posting)."""
    gained = progress_of(program, points, visit, spend)
    state.progress += gained
    state.visits += visit
    punches: list[tuple[str, int]] = []
    rewards: list[str] = []
    if visit:
        for card in program.punch_cards:
            count = state.punches.get(card.id, 0) + visit
            while count >= card.goal:
                count -= card.goal
                rewards.append(card.reward)
            state.punches[card.id] = count
            punches.append((card.id, count))
    reached = program.level_for_progress(state.progress)
    if state.tier not in program.levels_by_id:
        old, state.tier = state.tier, reached
        return Change(old, reached, tuple(punches), tuple(rewards), reason="program_change")
    if gained > 0 and program.level_rank(reached) > program.level_rank(state.tier):
        old, state.tier = state.tier, reached
        return Change(old, reached, tuple(punches), tuple(rewards))
    return Change(punches=tuple(punches), rewards=tuple(rewards))


@dataclass(frozen=True, slots=True)
class InWindow:
    """What one order has added to one tier window's progress (its points, visit and spend
    there): a change to the order takes back no more than this from that window."""

    start: datetime | None
    points: int = 0
    visit: int = 0
    spend: int = 0


def restate(
    added: InWindow, current: datetime, points: int, visit: int, spend: int
) -> tuple[InWindow, InWindow]:
    """An order's change (each part up or down) against what it added to the current window.

    Returns what the order has added to the current window afterwards, and what the change
    takes back from it. A gain counts in the window in which it posts; a loss comes off the
    current window only as far as the order added to it (rule 10: the window in which it
    posted, if still current), so no edit or refund can leave a window more than the
    order's net gain in it."""
    base = added if added.start == current else InWindow(current)
    parts, taken = [], []
    for had, change in ((base.points, points), (base.visit, visit), (base.spend, spend)):
        take = min(had, -change) if change < 0 else 0
        parts.append(had + max(0, change) - take)
        taken.append(take)
    return InWindow(current, *parts), InWindow(current, *taken)


def withdraw(program: Program, state: MemberState, taken: InWindow, visits_lost: int) -> Change:
    """Take back progress from the current window (what `restate` found the order had added
    to it) and a lost visit's punch step; never below 0."""
    state.progress = max(
        0, state.progress - progress_of(program, taken.points, taken.visit, taken.spend)
    )
    state.visits = max(0, state.visits - taken.visit)
    punches: list[tuple[str, int]] = []
    if visits_lost:
        for card in program.punch_cards:
            count = max(0, state.punches.get(card.id, 0) - visits_lost)
            state.punches[card.id] = count
            punches.append((card.id, count))
    return Change(punches=tuple(punches))


def roll_window(program: Program, state: MemberState) -> Change:
    """At a calendar year's start: the tier the year that ended earned; progress restarts."""
    new = program.level_for_progress(state.progress)
    old = state.tier
    state.tier, state.progress, state.visits = new, 0, 0
    if new == old:
        return Change()
    reason = "threshold" if old in program.levels_by_id else "program_change"
    return Change(old, new, reason=reason)


def window_bounds(program: Program, moment: datetime) -> tuple[datetime, datetime | None]:
    """The tier window containing `moment`: [1 January local, next 1 January) or lifetime."""
    if program.tiers.window == "lifetime":
        return datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC")), None
    zone = program.zone
    year = moment.astimezone(zone).year
    return datetime(year, 1, 1, tzinfo=zone), datetime(year + 1, 1, 1, tzinfo=zone)
