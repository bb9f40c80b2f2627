"""JSON whose objects give each key once: parsers disagree on which of two values wins
(`{"amount": "1", "amount": "20"}`), so neither does. And whose numbers mean what they say:
a number that a binary float would change (`19.999999999999999999` is read as 20.0) is
refused rather than read as another amount."""

from __future__ import annotations

import json
from decimal import Decimal
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


def loads(body: bytes | str, *, exact: bool = False) -> Any:
    """`json.loads`, refusing an object that gives a key twice (KeyGivenTwice, a ValueError).
    With `exact`, numbers with a fraction or an exponent are read as Decimal (for
    `inexact_number`)."""
    if exact:
        return json.loads(body, object_pairs_hook=_refuse_twice, parse_float=Decimal)
    return json.loads(body, object_pairs_hook=_refuse_twice)


def inexact_number(value: Any) -> str | None:
    """Where (`lines.0.unit_price`) the first number of a value read with `exact` lies that
    a binary float would change; None if there is none. Readers here take JSON numbers as
    floats, so such a number would silently become another amount."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Decimal):
            if Decimal(repr(float(item))) != item:
                return path
        elif isinstance(item, dict):
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(
                (f"{path}.{i}" if path else str(i), v) for i, v in reversed(list(enumerate(item)))
            )
    return None


def problem(body: bytes) -> str | None:
    """What is wrong with a JSON body that the JSON grammar allows: a key given twice, or a
    number a float would change. None if nothing (or if it is not JSON, which the route
    reports in its own words)."""
    try:
        value = loads(body, exact=True)
    except KeyGivenTwice as twice:
        return f"body: the key {twice.key!r} is given twice"
    except (ValueError, RecursionError):
        return None
    where = inexact_number(value)
    if where is None:
        return None
    return f"body.{where}: a number a binary float can not hold exactly; send money as text"


def is_json_media(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
