"""JSON numbers a float would change are found by path; every amount the API takes is not."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from punchcard import strict_json


@given(st.integers(min_value=0, max_value=1_000_000_000_000), st.sampled_from([0, 1, 2]))
def test_every_amount_with_up_to_two_decimals_is_kept_as_a_json_number(
    cents: int, places: int
) -> None:
    text = format(Decimal(cents).scaleb(-places), "f")
    body = f'{{"lines": [{{"unit_price": {text}}}], "amount": {text}}}'
    assert strict_json.inexact_number(strict_json.loads(body, exact=True)) is None
    assert strict_json.problem(body.encode()) is None


def test_the_first_number_a_float_would_change_is_named_by_its_path() -> None:
    body = b'{"a": 1.5, "lines": [{"qty": 1}, {"unit_price": 10.0000000000000001}], "b": 1e400}'
    assert strict_json.inexact_number(strict_json.loads(body, exact=True)) == ("lines.1.unit_price")
    assert strict_json.problem(b"[0.1, 19.999999999999999999]") == (
        "body.1: a number a binary float can not hold exactly; send money as text"
    )


def test_a_key_given_twice_is_found_before_any_number() -> None:
    assert strict_json.problem(b'{"x": 1e400, "x": 1}') == "body: the key 'x' is given twice"
    assert strict_json.problem(b"{not json") is None  # the route says so in its own words


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
)
def test_a_body_in_utf16_or_utf32_is_not_utf8_text(encoding: str) -> None:
    """json.loads guesses these from the first bytes and reads them; the API takes UTF-8."""
    body = '{"id": "x"}'.encode(encoding)
    assert json.loads(body) == {"id": "x"}
    assert strict_json.problem(body) == "body: the body is not UTF-8 text"


def test_a_byte_order_mark_and_an_encoded_surrogate_are_refused() -> None:
    assert strict_json.problem(b'\xef\xbb\xbf{"id": "x"}') == (
        "body: starts with a byte order mark (U+FEFF); send UTF-8 without one"
    )
    # A surrogate written in UTF-8's own form (ED A0 80): json.loads(bytes) takes it.
    assert strict_json.problem(b'{"id": "\xed\xa0\x80"}') == "body: the body is not UTF-8 text"


def test_a_lone_surrogate_is_named_by_its_path_in_values_keys_and_the_whole_body() -> None:
    assert strict_json.problem(b'{"lines": [{"sku": "ok"}, {"sku": "B\\ud800"}]}') == (
        "body.lines.1.sku: a lone surrogate is not text"
    )
    assert strict_json.problem(b'{"a": {"k\\udfff": 1}}') == (
        "body.a.k\\udfff: a lone surrogate is not text"
    )
    assert strict_json.problem(b'"\\udc00"') == "body: a lone surrogate is not text"
    assert strict_json.problem(b'{"ok": "\\ud83d\\ude00"}') is None  # a pair is a character


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _strings(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every string in a JSON value."""
    if isinstance(value, str):
        return [path]
    if not isinstance(value, dict | list):
        return []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return [p for key, child in items for p in _strings(child, (*path, key))]


@given(JSON, st.text(), st.data())
def test_any_lone_surrogate_anywhere_in_a_body_is_refused_by_its_path(
    value: Any, text: str, data: st.DataObject
) -> None:
    """Any JSON, any of its strings, any place in it, any lone surrogate: named by its path."""
    body = {"v": value, "t": text}
    *parents, last = data.draw(st.sampled_from(_strings(body)))
    holder: Any = body
    for key in parents:
        holder = holder[key]
    chosen = holder[last]
    at = data.draw(st.integers(0, len(chosen)))
    holder[last] = chosen[:at] + chr(data.draw(st.integers(0xD800, 0xDFFF))) + chosen[at:]
    where = ".".join(str(key) for key in (*parents, last))
    sent = json.dumps(body).encode()  # ASCII: the surrogate goes as its escape
    assert strict_json.problem(sent) == f"body.{where}: a lone surrogate is not text"
