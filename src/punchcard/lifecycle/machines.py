"""The transition tables of orders, rewards, gift card holds, points lots and member tiers.

A use case asks `MACHINE.target(state, event)` before it changes anything; a pair the
table does not list is an `invalid_state` error. `mermaid()` renders the same table,
so the diagrams in the docs cannot drift from the behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

from punchcard.engine.programs import Program
from punchcard.errors import InvalidState


@dataclass(frozen=True, slots=True)
class Transition:
    source: str
    event: str
    target: str


@dataclass(frozen=True)
class Machine:
    name: str
    initial: str
    transitions: tuple[Transition, ...]
    finals: tuple[str, ...] = ()

    def target(self, state: str, event: str, subject: str = "") -> str:
        """The state after `event`, or InvalidState when the table has no such transition."""
        for t in self.transitions:
            if t.source == state and t.event == event:
                return t.target
        what = f"{self.name} {subject}".strip()
        raise InvalidState(f"{what} is {state}: {event} is not allowed")

    def allows(self, state: str, event: str) -> bool:
        return any(t.source == state and t.event == event for t in self.transitions)

    def mermaid(self) -> str:
        lines = ["stateDiagram-v2", f"    [*] --> {self.initial}"]
        lines += [f"    {t.source} --> {t.target}: {t.event}" for t in self.transitions]
        lines += [f"    {state} --> [*]" for state in self.finals]
        return "\n".join(lines)


ORDER = Machine(
    "order",
    initial="open",
    transitions=(
        Transition("open", "edit", "open"),
        Transition("open", "close", "closed"),
        Transition("open", "void", "voided"),
        Transition("closed", "edit", "closed"),
        Transition("closed", "refund", "closed"),
        Transition("closed", "void", "voided"),
    ),
    finals=("voided",),
)

REWARD = Machine(
    "reward",
    initial="available",
    transitions=(
        Transition("available", "apply to an open order", "reserved"),
        Transition("available", "apply to a closing order", "used"),
        Transition("available", "valid_days pass", "expired"),
        Transition("reserved", "order closes", "used"),
        Transition("reserved", "open order voided", "available"),
        Transition("used", "closed order voided", "available"),
    ),
    finals=("expired",),
)

HOLD = Machine(
    "hold",
    initial="pending",
    transitions=(
        Transition("pending", "capture", "captured"),
        Transition("pending", "void", "voided"),
        Transition("pending", "7 days pass", "released"),
    ),
    finals=("captured", "voided", "released"),
)

POINTS_LOT = Machine(
    "points lot",
    initial="pending",
    transitions=(
        Transition("pending", "refund or edit", "pending"),
        Transition("pending", "accrual delay passes", "posted"),
        Transition("pending", "order voided", "withdrawn"),
        Transition("posted", "spent, clawed back or paid a debt", "spent"),
        Transition("posted", "expiry", "expired"),
    ),
    finals=("spent", "expired", "withdrawn"),
)

MACHINES = {"order": ORDER, "reward": REWARD, "hold": HOLD, "points_lot": POINTS_LOT}


def tier_machine(program: Program) -> Machine:
    """Member tiers of one program: up at once on a threshold, recomputed at each window."""
    tiers = program.tiers
    levels = tiers.levels
    unit = {"points": "points", "visits": "visits", "spend": program.currency}[tiers.metric]
    transitions = []
    for rank, lower in enumerate(levels):
        for upper in levels[rank + 1 :]:
            transitions.append(
                Transition(lower.id, f"{tiers.metric} reach {upper.threshold} {unit}", upper.id)
            )
    if tiers.window == "calendar_year":
        for upper_rank, upper in enumerate(levels):
            for lower in levels[:upper_rank]:
                transitions.append(
                    Transition(
                        upper.id, f"new year, last year's {tiers.metric} met {lower.id}", lower.id
                    )
                )
    return Machine(f"tier ({program.program})", levels[0].id, tuple(transitions))


def diagram(name: str, program: Program | None = None) -> str:
    """Mermaid text for one lifecycle; `tier` needs the program whose levels it draws."""
    if name == "tier":
        if program is None:
            raise ValueError("the tier diagram needs --program")
        return tier_machine(program).mermaid()
    if name not in MACHINES:
        raise ValueError(f"no diagram {name!r}: choose from {', '.join([*MACHINES, 'tier'])}")
    return MACHINES[name].mermaid()
