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
    return parsed


def as_name(value: Any, where: str) -> str:
    """An id or alias: a non-empty text, or a whole number written without quotes (YAML `id: 1001`)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise InvalidInput(f"{where}: a name (text or whole number) is required")
    return str(value)
