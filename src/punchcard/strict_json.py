"""JSON whose objects give each key once: parsers disagree on which of two values wins
(`{"amount": "1", "amount": "20"}`), so neither does. Whose numbers mean what they say:
a number that a binary float would change (`19.999999999999999999` is read as 20.0) is
refused rather than read as another amount. And whose text is text: UTF-8 (RFC 8259), and
no string a lone surrogate (`"\\ud800"` is valid JSON, but no UTF-8 encoder, database column
or response can hold it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    for path, item in walk(value):
        if isinstance(item, Decimal) and Decimal(repr(float(item))) != item:
            return path
    return None


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every value in a JSON value with its path (`lines.0.unit_price`), in document order;
    a stack, not recursion, so no nesting the parser took can make it fail."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        yield path, item
        if isinstance(item, dict):
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(
                (f"{path}.{i}" if path else str(i), v) for i, v in reversed(list(enumerate(item)))
            )


NOT_UTF8 = "body: the body is not UTF-8 text"  # in the words of app.py's `_unparseable`


class BadBody(ValueError):
    """A body refused for what it is, not for what it says; the message names where
    (`body.lines.0.sku: ...`)."""


class NotJson(BadBody):
    """Not JSON at all (or nested too deeply to read)."""


def read(body: bytes) -> Any:
    """A JSON body read as `loads(..., exact=True)`, or BadBody: not UTF-8 (json.loads would
    guess UTF-16 or UTF-32 from the first bytes and read those too), a byte order mark
    (RFC 8259: not to be sent; with it and without, one body would have two spellings), not
    JSON (NotJson), a key given twice, or a lone surrogate in any string or key. The one
    check of a body's text, for the API's every body and for inbound events alike."""
    encoding = json.detect_encoding(body)
    if encoding == "utf-8-sig":
        raise BadBody("body: starts with a byte order mark (U+FEFF); send UTF-8 without one")
    if encoding != "utf-8":
        raise BadBody(NOT_UTF8)
    try:
        text = body.decode("utf-8")  # strict: an encoded surrogate (ED A0 80) is not UTF-8
    except UnicodeDecodeError as exc:
        raise BadBody(NOT_UTF8) from exc
    try:
        value = loads(text, exact=True)
    except KeyGivenTwice as twice:
        raise BadBody(f"body: the key {twice.key!r} is given twice") from twice
    except RecursionError as exc:
        raise NotJson("body: the JSON is nested too deeply") from exc
    except ValueError as exc:
        raise NotJson("body: the body is not JSON") from exc
    where = lone_surrogate(value)
    if where is not None:
        raise BadBody(f"{_at(where)}: a lone surrogate is not text")
    return value


def lone_surrogate(value: Any) -> str | None:
    """Where (`lines.0.sku`) the first string or key of a JSON value lies that holds a lone
    surrogate; None if none does. Such a key is shown escaped (`\\ud800`) in the path."""
    for path, item in walk(value):
        if isinstance(item, str) and not _encodes(item):
            return path
        if isinstance(item, dict):
            for key in item:
                if not _encodes(key):
                    shown = key.encode("utf-8", "backslashreplace").decode()
                    return f"{path}.{shown}" if path else shown
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")  # the codec finds a surrogate far faster than a loop would
    except UnicodeEncodeError:
        return False
    return True


def problem(body: bytes) -> str | None:
    """What is wrong with a JSON body that the JSON grammar allows (see `read`), or a number
    a float would change. None if nothing (or if it is not JSON, which the route reports in
    its own words)."""
    try:
        value = read(body)
    except NotJson:
        return None
    except BadBody as bad:
        return str(bad)
    where = inexact_number(value)
    if where is None:
        return None
    return f"{_at(where)}: a number a binary float can not hold exactly; send money as text"


def _at(where: str) -> str:
    """A path in a body as problems name it: `body.lines.0.sku`, or `body` itself."""
    return f"body.{where}" if where else "body"


def is_json_media(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
