"""JSON whose objects give each key once: parsers disagree on which of two values wins
(`{"amount": "1", "amount": "20"}`), so neither does."""

from __future__ import annotations

import json
from typing import Any


class KeyGivenTwice(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} is given twice")
        self.key = key


def _refuse_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise KeyGivenTwice(key)
        out[key] = value
    return out


def loads(body: bytes | str) -> Any:
    """`json.loads`, refusing an object that gives a key twice (KeyGivenTwice, a ValueError)."""
    return json.loads(body, object_pairs_hook=_refuse_twice)


def key_given_twice(body: bytes) -> str | None:
    """The first key some object of the body gives twice; None if none (or not JSON, which
    the route reports in its own words)."""
    try:
        loads(body)
    except KeyGivenTwice as twice:
        return twice.key
    except (ValueError, RecursionError):
        return None
    return None


def is_json_media(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
