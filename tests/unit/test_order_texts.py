"""An order's texts (line ids, skus, categories, tender types) follow the rule of every id
(punchcard.names), in process as over HTTP: a scenario's order is held to it too."""

from __future__ import annotations

import pytest

from punchcard.engine.orders import OrderFormatError, parse_order_parts

LINE = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}


@pytest.mark.parametrize(
    ("key", "value", "told"),
    [
        ("sku", "BU\u202eRR", "holds U+202E, a bidi control, which no id or name may hold"),
        ("id", "l\u200b1", "holds U+200B, an invisible character, which no id or name may hold"),
        (
            "category",
            "bur\x85rito",
            "holds U+0085, a control character, which no id or name may hold",
        ),
    ],
)
def test_a_line_text_holding_a_refused_character_is_refused_naming_it(
    key: str, value: str, told: str
) -> None:
    with pytest.raises(OrderFormatError) as raised:
        parse_order_parts({"lines": [LINE | {key: value}]})
    assert str(raised.value) == f"order.lines[0].{key}: {told}"


def test_a_line_text_is_read_in_nfc() -> None:
    parts = parse_order_parts({"lines": [LINE | {"sku": "CAFE\u0301"}]})
    assert parts["lines"][0].sku == "CAF\u00c9"
