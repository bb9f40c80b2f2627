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
    """Post an order's (or a gain's) progress and visit; the tier only ever moves up here."""
    state.progress += progress_of(program, points, visit, spend)
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
    if program.level_rank(reached) > program.level_rank(state.tier):
        old, state.tier = state.tier, reached
        return Change(old, reached, tuple(punches), tuple(rewards))
    return Change(punches=tuple(punches), rewards=tuple(rewards))


def withdraw(
    program: Program, state: MemberState, points: int, visit: int, spend: int, window_current: bool
) -> Change:
    """Take back progress (only in the window it posted in) and a visit's punch step; never below 0."""
    if window_current:
        state.progress = max(0, state.progress - progress_of(program, points, visit, spend))
        state.visits = max(0, state.visits - visit)
    punches: list[tuple[str, int]] = []
    if visit:
        for card in program.punch_cards:
            count = max(0, state.punches.get(card.id, 0) - visit)
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
