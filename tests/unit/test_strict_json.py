"""JSON numbers a float would change are found by path; every amount the API takes is not."""

from __future__ import annotations

from decimal import Decimal

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
