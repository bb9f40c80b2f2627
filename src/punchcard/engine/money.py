"""Money and exact decimal arithmetic: integer minor units, never binary floats."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction

_MONEY_RE = re.compile(r"^-?[0-9]+(\.[0-9]{1,2})?$")  # ASCII digits only
_DECIMAL_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


class MoneyFormatError(ValueError):
    """A money or decimal value that is not written as the format requires."""


def parse_money(value: object) -> int:
    """Read money from its decimal text ("9.50", 9.5, 9) into cents."""
    text = _as_text(value)
    if not _MONEY_RE.match(text):
        raise MoneyFormatError(f'{value!r} is not money: at most two decimals, like "9.50"')
    return int(Decimal(text) * 100)


def parse_decimal(value: object) -> Decimal:
    """Read an exact decimal (a rate or multiplier) from its text."""
    text = _as_text(value)
    if not _DECIMAL_RE.match(text):
        raise MoneyFormatError(f"{value!r} is not a decimal number")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
        raise MoneyFormatError(f"{value!r} is not a decimal number") from exc


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        raise MoneyFormatError(f"{value!r} is not a number")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int | str):
        return str(value).strip()
    if isinstance(value, float):
        # YAML and JSON loaders here keep numbers as text; a float can only come
        # from a caller, and repr() gives its shortest round-tripping decimal text.
        return repr(value)
    raise MoneyFormatError(f"{value!r} is not a number")


def format_money(cents: int) -> str:
    """Cents as a decimal string with two places: 2250 -> "22.50"."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


ROUNDINGS = {"floor": ROUND_FLOOR, "half_up": ROUND_HALF_UP, "ceil": ROUND_CEILING}


def round_points(value: Fraction, mode: str) -> int:
    """Round an exact quantity of points to an integer with the program's rounding mode."""
    if mode == "floor":
        return value.numerator // value.denominator
    if mode == "ceil":
        return -((-value.numerator) // value.denominator)
    return round_half_up(value)


def round_ratio(numerator: int, denominator: int, mode: str) -> int:
    """Round numerator/denominator (denominator > 0) to an integer, in integers only: the hot path."""
    if mode == "floor":
        return numerator // denominator
    if mode == "ceil":
        return -(-numerator // denominator)
    if numerator < 0:
        return -((2 * -numerator + denominator) // (2 * denominator))
    return (2 * numerator + denominator) // (2 * denominator)


def ratio(value: Decimal) -> tuple[int, int]:
    """An exact decimal as (numerator, denominator) integers."""
    return value.as_integer_ratio()


def round_half_up(value: Fraction) -> int:
    """Round half away from zero, exactly."""
    if value < 0:
        return -round_half_up(-value)
    return int((value + Fraction(1, 2)).__floor__())
