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
    label: str = ""  # what the diagram says, when the event name alone says too little


@dataclass(frozen=True)
class Machine:
    name: str
    initial: str
    transitions: tuple[Transition, ...]
    finals: tuple[str, ...] = ()
    also_initial: tuple[str, ...] = ()  # states a subject may also be born in

    def target(self, state: str, event: str, subject: str = "") -> str:
        """The state after `event`, or InvalidState when the table has no such transition."""
        for t in self.transitions:
            if t.source == state and t.event == event:
                return t.target
        what = f"{self.name} {subject}".strip()
        raise InvalidState(f"{what} is {state}: {event} is not allowed")

    def check(self, source: str, event: str, target: str, subject: str = "") -> None:
        """For machines where one event may lead to several states (tiers): is this move listed?"""
        if not any(
            (t.source, t.event, t.target) == (source, event, target) for t in self.transitions
        ):
            what = f"{self.name} {subject}".strip()
            raise InvalidState(f"{what}: {source} -> {target} on {event} is not allowed")

    def allows(self, state: str, event: str) -> bool:
        return any(t.source == state and t.event == event for t in self.transitions)

    def mermaid(self) -> str:
        lines = ["stateDiagram-v2"]
        lines += [f"    [*] --> {state}" for state in (self.initial, *self.also_initial)]
        lines += [f"    {t.source} --> {t.target}: {t.label or t.event}" for t in self.transitions]
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
        Transition("available", "valid_days pass", "expired"),
        Transition("reserved", "order closes", "used"),
        Transition("reserved", "release", "available", "open order voided, or its rewards edited"),
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
    also_initial=("posted",),  # a gain from a refund or edit posts at once
    transitions=(
        Transition("pending", "refund or edit", "pending"),
        Transition("pending", "accrual delay passes", "posted"),
        Transition("pending", "accrual delay passes, all paying a debt", "spent"),
        Transition("pending", "order voided or earns nothing", "withdrawn"),
        Transition("posted", "spent or clawed back to zero", "spent"),
        Transition("posted", "expiry", "expired"),
    ),
    finals=("spent", "expired", "withdrawn"),
)

MACHINES = {"order": ORDER, "reward": REWARD, "hold": HOLD, "points_lot": POINTS_LOT}


THRESHOLD = "threshold"  # posting lifted progress to a higher level
NEW_WINDOW = "new window"  # a calendar year began: last year's progress decides


def tier_machine(program: Program) -> Machine:
    """Member tiers of one program: up at once on a threshold, recomputed at each window."""
    tiers = program.tiers
    levels = tiers.levels
    unit = {"points": "points", "visits": "visits", "spend": program.currency}[tiers.metric]
    transitions = []
    for rank, lower in enumerate(levels):
        for upper in levels[rank + 1 :]:
            label = f"{tiers.metric} reach {upper.threshold} {unit}"
            transitions.append(Transition(lower.id, THRESHOLD, upper.id, label))
    if tiers.window == "calendar_year":
        # Usually down (or unchanged); up only when a new version lowered a threshold.
        for level in levels:
            for other in levels:
                if other.id != level.id:
                    label = f"new year, last year's {tiers.metric} met {other.id}"
                    transitions.append(Transition(level.id, NEW_WINDOW, other.id, label))
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
