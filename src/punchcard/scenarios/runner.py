"""Run scenarios step by step against a target, with a scenario clock.

A step with `at` first moves the clock there (doing the due work on the way); after
every step all work due at the clock is done, as the running system would have done
it by then. A step with `error: CODE` passes only if it fails with that code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from punchcard.engine.durations import parse_duration
from punchcard.engine.money import MoneyFormatError, format_money, parse_money
from punchcard.errors import CODES, InvalidInput, PunchcardError
from punchcard.scenarios.files import Scenario
from punchcard.services.inputs import parse_time

VERBS = (
    "enroll",
    "order",
    "close",
    "edit",
    "refund",
    "void",
    "redeem",
    "advance",
    "gift_card",
    "publish",
    "expect",
)


# The keys each verb takes (scenarios.md); a typo is refused, never silently ignored. An
# order, edit or refund is checked by the use case itself, as the API checks it.
STEP_KEYS: dict[str, frozenset[str]] = {
    "enroll": frozenset({"member", "at"}),
    "close": frozenset({"order", "at"}),
    "void": frozenset({"order", "at"}),
    "redeem": frozenset({"member", "reward", "as", "at"}),
    "publish": frozenset({"program", "at"}),
}
GIFT_CARD_KEYS: dict[str, frozenset[str]] = {
    "issue": frozenset({"issue", "amount", "at"}),
    "reload": frozenset({"reload", "amount", "partial", "at"}),
    "redeem": frozenset({"redeem", "amount", "partial", "at"}),
    "authorize": frozenset({"authorize", "amount", "partial", "hold", "at"}),
    "capture": frozenset({"capture", "amount", "at"}),
    "void": frozenset({"void", "at"}),
}
EXPECT_PARTS = {
    "points": {"posted", "pending", "available"},
    "rewards": {"available", "reserved", "used", "expired"},
    "last": {"approved"},
}


class Target(Protocol):
    """Where a scenario runs: in process, or (later) a sandbox of a running server."""

    def start(self, program: str, at: datetime) -> None: ...
    def step(self, verb: str, args: Mapping[str, Any], now: datetime, base: Any) -> None: ...
    def run_due(self, now: datetime) -> None: ...
    def member(self, alias: str, now: datetime) -> dict[str, Any]: ...
    def gift_card(self, alias: str) -> dict[str, Any]: ...
    def finish(self) -> None: ...


class StepFailed(Exception):
    pass


@dataclass(frozen=True)
class Result:
    scenario: Scenario
    passed: bool
    message: str = ""


def run(scenario: Scenario, target: Target) -> Result:
    try:
        clock = parse_time(scenario.start, "start")
        target.start(scenario.program, clock)
        for number, step in enumerate(scenario.steps, start=1):
            clock = _run_step(target, scenario, number, step, clock)
    except StepFailed as exc:
        return Result(scenario, False, str(exc))
    except PunchcardError as exc:
        return Result(scenario, False, f"set-up failed: {exc.code}: {exc.message}")
    except Exception as exc:  # a bug: report it against this scenario, run the others
        return Result(scenario, False, f"crashed: {type(exc).__name__}: {exc}")
    finally:
        target.finish()
    return Result(scenario, True)


def _run_step(
    target: Target, scenario: Scenario, number: int, step: Any, clock: datetime
) -> datetime:
    if not isinstance(step, dict):
        raise StepFailed(f"step {number}: a step is a mapping with one verb")
    verbs = [key for key in step if key != "error"]
    if len(verbs) != 1 or verbs[0] not in VERBS:
        raise StepFailed(
            f"step {number}: give one verb of {', '.join(VERBS)}; saw {', '.join(map(str, verbs))}"
        )
    verb = verbs[0]
    args = step[verb]
    where = f"step {number} ({verb})"
    wanted_error = step.get("error")
    if wanted_error is not None and wanted_error not in CODES:
        raise StepFailed(f"{where}: error {wanted_error!r} is not one of {', '.join(CODES)}")
    if verb == "expect":
        if wanted_error is not None:
            raise StepFailed(f"{where}: an expect checks state; it can not carry error")
        _expect(target, where, args, clock)
        return clock
    _check_keys(where, verb, args)
    clock, error = perform(target, scenario.path.parent, verb, args, clock)
    if error is None and wanted_error is not None:
        raise StepFailed(f"{where}: wanted error {wanted_error}, but the step succeeded")
    if error is not None and wanted_error is None:
        raise StepFailed(f"{where}: failed with {error.code}: {error.message}")
    if error is not None and error.code != wanted_error:
        raise StepFailed(
            f"{where}: wanted error {wanted_error}, seen {error.code}: {error.message}"
        )
    return clock


def _check_keys(where: str, verb: str, args: Any) -> None:
    """A key the verb does not take is a mistake in the file: the scenario fails, naming it."""
    if not isinstance(args, dict):
        return  # the step itself reports what it takes
    allowed = STEP_KEYS.get(verb)
    if verb == "gift_card":
        ops = [op for op in GIFT_CARD_KEYS if op in args]
        allowed = GIFT_CARD_KEYS[ops[0]] if len(ops) == 1 else None
    unknown = sorted(set(map(str, args)) - allowed) if allowed is not None else []
    if unknown:
        raise StepFailed(
            f"{where}: unknown key {unknown[0]} (a typo?); it takes {', '.join(sorted(allowed or ()))}"
        )


def perform(
    target: Target, base: Any, verb: str, args: Any, clock: datetime
) -> tuple[datetime, PunchcardError | None]:
    """Do one step that is not an expect: move the clock to its `at` (doing the due work on
    the way), run it, then do the work due at the clock. Returns the clock and the domain
    error the step failed with, if it did (a failed step changed nothing)."""
    error = None
    try:
        if verb == "advance":
            clock = _advance_to(args, clock)
        else:
            if not isinstance(args, dict):
                raise InvalidInput(f"{verb}: takes a mapping")
            if args.get("at") is not None:
                at = parse_time(args["at"], f"{verb}.at")
                if at < clock:
                    raise InvalidInput(
                        f"{verb}.at: {at.isoformat()} is before the clock {clock.isoformat()}"
                    )
                target.run_due(at)
                clock = at
            target.step(verb, args, clock, base)
    except PunchcardError as exc:
        error = exc
    target.run_due(clock)
    return clock, error


def _advance_to(args: Any, clock: datetime) -> datetime:
    """Where `advance` moves the clock; a bad duration or a time in the past is invalid_input."""
    if isinstance(args, dict) and set(args) == {"to"}:
        to = parse_time(args["to"], "advance.to")
        if to < clock:
            raise InvalidInput(
                f"advance.to: {to.isoformat()} is before the clock; it never moves back"
            )
        return to
    try:
        return clock + parse_duration(args)
    except ValueError as exc:
        raise InvalidInput(f"advance: {exc}") from exc


def _expect(target: Target, where: str, args: Any, clock: datetime) -> None:
    if not isinstance(args, dict):
        raise StepFailed(f"{where}: expect takes a mapping")
    subjects = [k for k in ("member", "gift_card") if k in args]
    if len(subjects) != 1:
        raise StepFailed(f"{where}: name one subject, member or gift_card")
    subject = subjects[0]
    try:
        seen = (
            target.member(args["member"], clock)
            if subject == "member"
            else target.gift_card(args["gift_card"])
        )
    except PunchcardError as exc:
        raise StepFailed(f"{where}: {subject} {args[subject]}: {exc.code}: {exc.message}") from exc
    allowed = MEMBER_KEYS if subject == "member" else CARD_KEYS
    for key, wanted in args.items():
        if key == subject:
            continue
        if key not in allowed:
            raise StepFailed(f"{where}: {key} is not something to expect of a {subject}")
        parts = EXPECT_PARTS.get(key)
        if parts is not None and isinstance(wanted, dict):
            unknown = sorted(set(map(str, wanted)) - parts)
            if unknown:
                raise StepFailed(
                    f"{where}: {key}.{unknown[0]} is not something to expect; "
                    f"give {', '.join(sorted(parts))}"
                )
        _compare(where, key, wanted, seen.get(key))


MEMBER_KEYS = {"points", "tier", "visits", "punch_cards", "rewards"}
CARD_KEYS = {"balance", "last"}


def _compare(where: str, key: str, wanted: Any, seen: Any) -> None:
    if isinstance(wanted, dict):
        if not isinstance(seen, dict):
            raise StepFailed(f"{where}: {key}: wanted {wanted}, seen {seen}")
        for sub, value in wanted.items():
            _compare(where, f"{key}.{sub}", value, seen.get(sub))
        return
    if key.startswith("rewards."):
        if not isinstance(wanted, list) or Counter(map(str, wanted)) != Counter(seen or []):
            raise StepFailed(f"{where}: {key}: wanted {wanted}, seen {sorted(seen or [])}")
        return
    if key in ("balance", "last.approved"):
        try:
            cents = parse_money(wanted)
        except MoneyFormatError as exc:
            raise StepFailed(f"{where}: {key}: {exc}") from exc
        if cents != seen:
            shown = "none" if seen is None else format_money(seen)
            raise StepFailed(f"{where}: {key}: wanted {format_money(cents)}, seen {shown}")
        return
    if wanted != seen:
        raise StepFailed(f"{where}: {key}: wanted {wanted}, seen {seen}")
