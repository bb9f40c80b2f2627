"""Values at the edges: times (ISO-8601 with an offset, always aware) and names (ids, aliases)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from punchcard.errors import InvalidInput


def parse_time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(
                f"{where}: {value!r} is not a time like 2026-03-03T12:30:00-06:00"
            ) from exc
    else:
        raise InvalidInput(f"{where}: {value!r} is not a time")
    if parsed.tzinfo is None:
        raise InvalidInput(f"{where}: {value!r} needs a UTC offset or Z")
    if not 1900 <= parsed.year <= 9000:
        raise InvalidInput(f"{where}: {value!r} is outside the years 1900 to 9000")
    return parsed


MAX_NAME = 200


def as_name(value: Any, where: str) -> str:
    """An id or alias: a non-empty text, or a whole number written without quotes (YAML `id: 1001`).

    At most 200 characters, no "/" and no control characters: names travel in URL paths."""
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise InvalidInput(f"{where}: a name (text or whole number) is required")
    text = str(value)
    if len(text) > MAX_NAME or "/" in text or any(ord(c) < 32 for c in text):
        raise InvalidInput(
            f"{where}: at most {MAX_NAME} characters, without / or control characters"
        )
    return text
