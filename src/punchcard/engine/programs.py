"""Program definitions (docs/programs.md): parsed once, validated, then read by the engine.

Pydantic models sit at the edge: they check the document and convert money to cents
and durations to timedeltas. Every model forbids unknown keys (a typo must never
silently disable a rule) except those beginning with `x-`, which are extensions.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from punchcard.engine.documents import DocumentError, format_path, line_of, load_document
from punchcard.engine.durations import parse_duration
from punchcard.engine.matchers import MatchIndex, index_matches
from punchcard.engine.money import parse_decimal, parse_money, ratio


def _duration(value: Any) -> timedelta:
    try:
        delay = parse_duration(value)
    except OverflowError as exc:
        raise ValueError(f"{value!r} is longer than {MAX_DAYS} days") from exc
    if delay > timedelta(days=MAX_DAYS):
        raise ValueError(f"{value!r} is longer than {MAX_DAYS} days")
    return delay


# Bounds keep every figure a program can produce far inside the store's 64-bit integers and
# Python's dates: a program beyond them is a mistake, and is answered as one.
MAX_DAYS = 36_500  # a duration or a number of days: at most 100 years
MAX_COUNT = 1_000_000_000  # goals, limits, costs, bonus points
MAX_RATE = 1_000_000  # points per unit, multipliers
Cents = Annotated[int, BeforeValidator(parse_money), Field(ge=0, le=10**12)]
Rate = Annotated[Decimal, BeforeValidator(parse_decimal), Field(ge=0, le=MAX_RATE)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT, strict=True)]
Days = Annotated[int, Field(gt=0, le=MAX_DAYS, strict=True)]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")  # ASCII digits; fullmatch: no "\n"


class Strict(BaseModel):
    """Forbids unknown keys, allows `x-` extensions, freezes the result."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_extensions(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))
            }
        return data


class Match(Strict):
    """Matches a line (or modifier) on its own sku or category."""

    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    def matches(self, sku: str, category: str) -> bool:
        return sku in self.skus or category in self.categories


class Earn(Strict):
    points_per_unit: Rate
    rounding: Literal["floor", "half_up", "ceil"] = "floor"
    exclude: Match = Match()
    accrual_delay: Duration = timedelta(0)
    negative_balance: Literal["allow", "clamp"] = "allow"

    @cached_property
    def rate(self) -> tuple[int, int]:
        """points_per_unit as an integer ratio, computed once."""
        return ratio(self.points_per_unit)

    @field_validator("accrual_delay")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value


class Expiry(Strict):
    months_after_earn: Annotated[int, Field(gt=0, le=MAX_DAYS // 30, strict=True)] | None = None
    inactivity_days: Days | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Expiry:
        if (self.months_after_earn is None) == (self.inactivity_days is None):
            raise ValueError("give exactly one of months_after_earn or inactivity_days")
        return self


class Level(Strict):
    id: Id
    threshold: Decimal
    multiplier: Rate = Decimal(1)

    @cached_property
    def bonus_rate(self) -> tuple[int, int]:
        """multiplier - 1 as an integer ratio: the bonus share of base points."""
        return ratio(self.multiplier - 1)

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_text(cls, value: Any) -> Decimal:
        return parse_decimal(value)

    @field_validator("multiplier")
    @classmethod
    def _at_least_one(cls, value: Decimal) -> Decimal:
        if value < 1:
            raise ValueError("a tier multiplier is at least 1")
        return value


class Tiers(Strict):
    metric: Literal["points", "visits", "spend"]
    window: Literal["calendar_year", "lifetime"]
    levels: list[Level] = Field(min_length=1)

    @model_validator(mode="after")
    def _thresholds(self) -> Tiers:
        if self.levels[0].threshold != 0:
            raise ValueError("the first level must have threshold 0")
        ids = [level.id for level in self.levels]
        if len(set(ids)) != len(ids):
            raise ValueError("level ids must be unique")
        for lower, upper in zip(self.levels, self.levels[1:], strict=False):
            if upper.threshold <= lower.threshold:
                raise ValueError(f"thresholds must rise: {upper.id} is not above {lower.id}")
        for level in self.levels:
            if self.metric == "spend":
                parse_money(level.threshold)  # money: at most two decimals
            elif level.threshold != int(level.threshold):
                raise ValueError(f"{level.id}: a {self.metric} threshold is a whole number")
        return self

    def threshold_units(self, level: Level) -> int:
        """The threshold in progress units: points, visits, or cents of spend."""
        if self.metric == "spend":
            return parse_money(level.threshold)
        return int(level.threshold)


class Visits(Strict):
    min_spend: Cents = 0
    max_per_day: PositiveInt | None = None


class PunchCard(Strict):
    id: Id
    goal: PositiveInt
    reward: Id


class ItemBonus(Strict):
    id: Id
    match: Match
    points_per_unit: Rate
    max_units_per_order: PositiveInt | None = None

    @cached_property
    def rate(self) -> tuple[int, int]:
        return ratio(self.points_per_unit)


class Hours(Strict):
    from_: str = Field(alias="from")
    to: str

    @field_validator("from_", "to")
    @classmethod
    def _hhmm(cls, value: Any) -> str:
        if not isinstance(value, str) or not _HHMM.fullmatch(value):
            raise ValueError(f'{value!r} is not a local time like "14:00"')
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Hours:
        if self.from_ == self.to:
            raise ValueError("from and to are equal: the window would be empty")
        return self

    @cached_property
    def start(self) -> time:
        return time.fromisoformat(self.from_)

    @cached_property
    def end(self) -> time:
        return time.fromisoformat(self.to)


def _local_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a local date-time like 2026-03-01T00:00:00")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a local date-time like 2026-03-01T00:00:00") from exc
    if parsed.tzinfo is not None:
        raise ValueError(f"{value!r}: times in a program are local, without an offset")
    return parsed


LocalDateTime = Annotated[datetime, BeforeValidator(_local_datetime)]


class Promotion(Strict):
    id: Id
    starts: LocalDateTime
    ends: LocalDateTime
    days: frozenset[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    hours: Hours | None = None
    tiers: frozenset[str] | None = None
    multiplier: Rate | None = None
    bonus_points: PositiveInt | None = None
    min_spend: Cents = 0
    limit_per_member: PositiveInt | None = None

    @cached_property
    def bonus_rate(self) -> tuple[int, int]:
        """multiplier - 1 as an integer ratio (bonus_points promotions: 0)."""
        return ratio((self.multiplier or Decimal(1)) - 1)

    @model_validator(mode="after")
    def _shape(self) -> Promotion:
        if self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        if (self.multiplier is None) == (self.bonus_points is None):
            raise ValueError("give exactly one of multiplier or bonus_points")
        if self.multiplier is not None and self.multiplier < 1:
            raise ValueError("a promotion multiplier is at least 1")
        return self


class FreeItem(Strict):
    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _something(self) -> FreeItem:
        if not self.skus and not self.categories:
            raise ValueError("free_item must name skus or categories")
        return self

    def matches(self, sku: str, category: str) -> bool:
        return sku in self.skus or category in self.categories


class Discount(Strict):
    free_item: FreeItem | None = None
    max_value: Cents | None = None
    amount_off: Cents | None = None
    percent_off: Rate | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Discount:
        kinds = [
            k for k in ("free_item", "amount_off", "percent_off") if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError("give exactly one of free_item, amount_off or percent_off")
        if self.max_value is not None and self.free_item is None:
            raise ValueError("max_value goes with free_item")
        if self.percent_off is not None and not 0 < self.percent_off <= 100:
            raise ValueError("percent_off is above 0 and at most 100")
        if self.amount_off is not None and self.amount_off <= 0:
            raise ValueError("amount_off must be above zero")
        return self


class Reward(Strict):
    id: Id
    cost: PositiveInt | None = None
    valid_days: Days
    discount: Discount


DEFAULT_TIERS = Tiers(metric="points", window="lifetime", levels=[Level(id="member", threshold=0)])


class Program(Strict):
    """One version of a loyalty program, validated."""

    program: Id
    name: str = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    timezone: str
    earn: Earn
    expiry: Expiry | None = None
    tiers: Tiers = DEFAULT_TIERS
    visits: Visits = Visits()
    punch_cards: list[PunchCard] = []
    item_bonuses: list[ItemBonus] = []
    promotions: list[Promotion] = []
    rewards: list[Reward] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone like America/Chicago") from exc
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def rewards_by_id(self) -> dict[str, Reward]:
        return {reward.id: reward for reward in self.rewards}

    @cached_property
    def item_bonus_index(self) -> MatchIndex:
        """The item rules by sku and category, so a line finds its rules without a scan."""
        return index_matches([rule.match for rule in self.item_bonuses])

    @cached_property
    def levels_by_id(self) -> dict[str, Level]:
        return {level.id: level for level in self.tiers.levels}

    def level_for_progress(self, progress: int) -> str:
        """The highest level whose threshold the progress meets."""
        best = self.tiers.levels[0].id
        for level in self.tiers.levels:
            if progress >= self.tiers.threshold_units(level):
                best = level.id
        return best

    def level_rank(self, level_id: str) -> int:
        """Position of a level; a level this version does not know ranks lowest."""
        for rank, level in enumerate(self.tiers.levels):
            if level.id == level_id:
                return rank
        return -1


class Problem:
    """One thing wrong with a program document, with where it is."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}"


class ProgramError(ValueError):
    """A program document with problems; `problems` lists each with its key path and line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def parse_program(text: str) -> Program:
    """Parse and validate a program document (YAML or JSON text)."""
    try:
        data, lines = load_document(text)
    except DocumentError as exc:
        raise ProgramError([Problem(format_path(exc.path), exc.line or 1, exc.message)]) from exc
    return program_from_data(data, lines)


def program_from_data(data: Any, lines: dict[tuple[str | int, ...], int] | None = None) -> Program:
    """Validate already-loaded program data (e.g. an inline program of a scenario)."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise ProgramError([Problem("(document)", 1, "a program is a mapping of keys")])
    try:
        program = Program.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key (a typo? extensions begin with x-)"
            problems.append(Problem(format_path(loc), line_of(lines, loc), message))
        raise ProgramError(problems) from exc
    wrong = _reference_problems(program)
    if wrong:
        raise ProgramError(
            [Problem(format_path(loc), line_of(lines, loc), msg) for loc, msg in wrong]
        )
    return program


def _reference_problems(program: Program) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks across sections: unique ids, and references that must name something defined."""
    wrong: list[tuple[tuple[str | int, ...], str]] = []
    for kind in ("punch_cards", "item_bonuses", "promotions", "rewards"):
        seen: set[str] = set()
        for index, item in enumerate(getattr(program, kind)):
            if item.id in seen:
                wrong.append(((kind, index, "id"), f"{item.id!r} is used twice"))
            seen.add(item.id)
    for index, card in enumerate(program.punch_cards):
        if card.reward not in program.rewards_by_id:
            wrong.append((("punch_cards", index, "reward"), f"{card.reward!r} is not in rewards"))
    for index, promo in enumerate(program.promotions):
        for tier in sorted((promo.tiers or frozenset()) - set(program.levels_by_id)):
            wrong.append((("promotions", index, "tiers"), f"{tier!r} is not a tier level"))
    return wrong


def _is_union_tag(part: str | int) -> bool:
    # Pydantic names union and function-validator branches inside loc; people do not.
    return isinstance(part, str) and (
        part.startswith("function-") or part in {"literal['floor','half_up','ceil']"}
    )
