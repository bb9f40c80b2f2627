"""The transition tables enforce lifecycles and draw the same diagrams."""

from __future__ import annotations

import pytest

from punchcard.engine.programs import parse_program
from punchcard.errors import InvalidState
from punchcard.lifecycle.machines import (
    HOLD,
    NEW_WINDOW,
    ORDER,
    POINTS_LOT,
    REWARD,
    THRESHOLD,
    diagram,
    tier_machine,
)

from ..conftest import EXAMPLE_PROGRAM


def test_allowed_order_transitions() -> None:
    assert ORDER.target("open", "close") == "closed"
    assert ORDER.target("closed", "refund") == "closed"
    assert ORDER.target("closed", "void") == "voided"


@pytest.mark.parametrize(
    ("state", "event"),
    [
        ("open", "refund"),
        ("voided", "close"),
        ("voided", "void"),
        ("closed", "close"),
        ("voided", "edit"),
    ],
)
def test_forbidden_order_transitions_are_invalid_state(state: str, event: str) -> None:
    with pytest.raises(InvalidState, match=f"order o1 is {state}: {event} is not allowed"):
        ORDER.target(state, event, "o1")


def test_a_hold_resolves_at_most_once() -> None:
    for first in ("capture", "void"):
        resolved = HOLD.target("pending", first)
        for second in ("capture", "void"):
            assert not HOLD.allows(resolved, second)


def test_diagrams_are_rendered_from_the_tables() -> None:
    text = diagram("order")
    assert text.splitlines()[:2] == ["stateDiagram-v2", "    [*] --> open"]
    assert "    open --> closed: close" in text
    assert len([line for line in text.splitlines() if "-->" in line]) == len(ORDER.transitions) + 2
    assert "    reserved --> used: order closes" in diagram("reward")
    assert len(REWARD.transitions) == 5
    assert "    reserved --> available: open order voided, or its rewards edited" in diagram(
        "reward"
    )


def test_the_tier_diagram_shows_the_programs_levels_and_thresholds() -> None:
    program = parse_program(EXAMPLE_PROGRAM.read_text())
    text = diagram("tier", program)
    assert "    member --> gold: points reach 1000 points" in text
    assert "    gold --> platinum: points reach 2500 points" in text
    assert "    platinum --> member: new year, last year's points met member" in text
    assert len(tier_machine(program).transitions) == 3 + 6  # 3 moves up, 6 at a new window


def test_a_tier_never_falls_on_a_threshold() -> None:
    machine = tier_machine(parse_program(EXAMPLE_PROGRAM.read_text()))
    machine.check("member", THRESHOLD, "platinum")
    machine.check("platinum", NEW_WINDOW, "member")
    with pytest.raises(InvalidState, match="gold -> member on threshold is not allowed"):
        machine.check("gold", THRESHOLD, "member")


def test_a_points_lot_is_born_pending_or_posted() -> None:
    text = diagram("points_lot")
    assert text.splitlines()[1:3] == ["    [*] --> pending", "    [*] --> posted"]
    assert POINTS_LOT.target("pending", "accrual delay passes") == "posted"
    with pytest.raises(InvalidState):
        POINTS_LOT.target("expired", "expiry")


def test_an_unknown_diagram_is_refused() -> None:
    with pytest.raises(ValueError, match="no diagram 'cat'"):
        diagram("cat")
