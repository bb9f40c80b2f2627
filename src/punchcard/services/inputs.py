"""Values at the edges: times (ISO-8601 with an offset, always aware) and names (ids, aliases)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from punchcard import names
from punchcard.errors import InvalidInput


def read_time(value: Any) -> datetime:
    """A time as the API, scenarios and inbound events write it: ISO 8601 text with its UTC
    offset (`2026-03-03T12:30:00-06:00`, `...Z`). Never a number or digits alone: read as
    seconds since 1970 (`"1700000000"`) or as a date (`"20260303"`), they would name a
    moment the writer did not mean. A ValueError says what is wrong."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time; write it like 2026-03-03T12:30:00-06:00")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a time like 2026-03-03T12:30:00-06:00") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} needs a UTC offset or Z, like 2026-03-03T12:30:00-06:00")
    return parsed


def parse_time(value: Any, where: str) -> datetime:
    try:
        parsed = value if isinstance(value, datetime) else read_time(value)
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from exc
    if parsed.tzinfo is None:
        raise InvalidInput(f"{where}: {value!r} needs a UTC offset or Z")
    if not 1900 <= parsed.year <= 9000:
        raise InvalidInput(f"{where}: {value!r} is outside the years 1900 to 9000")
    return parsed


MAX_NAME = 200


def as_name(value: Any, where: str) -> str:
    """An id or alias: a non-empty text, or a whole number written without quotes (YAML `id: 1001`).

    At most 200 characters, no "/" (names travel in URL paths), and none of the characters
    `names.problem` refuses; read in NFC, so two spellings of one name are one name."""
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise InvalidInput(f"{where}: a name (text or whole number) is required")
    text = names.normal(str(value))
    if len(text) > MAX_NAME or "/" in text:
        raise InvalidInput(f"{where}: at most {MAX_NAME} characters, without /")
    wrong = names.problem(text)
    if wrong is not None:
        raise InvalidInput(f"{where}: {wrong}")
    return text
