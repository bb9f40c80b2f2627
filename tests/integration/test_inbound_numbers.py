"""An inbound event's money must mean what it says; a platform's own fields are not read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from punchcard.errors import InvalidInput

from .helpers import new_app, send_inbound

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
ORDER = (
    b'"order": {"id": "o1", "member": "ann", "lines": [{"id": "l1", "sku": "B",'
    b' "category": "burrito", "qty": 1, "unit_price": PRICE}]}'
)


def _send(engine: sa.Engine, body: bytes) -> bool:
    return send_inbound(engine, new_app(engine).env_id, body, NOW)


def test_an_order_price_a_float_would_change_is_refused(engine: sa.Engine) -> None:
    body = (
        b'{"id": "e1", "type": "order.placed", '
        + ORDER.replace(b"PRICE", b"10.0000000000000001")
        + b"}"
    )
    with pytest.raises(InvalidInput, match=r"^body\.order\.lines\.0\.unit_price: a number"):
        _send(engine, body)


def test_a_platforms_own_long_number_does_not_refuse_the_event(engine: sa.Engine) -> None:
    body = (
        b'{"id": "e1", "type": "order.placed", "score": 0.10000000000000001, '
        + ORDER.replace(b"PRICE", b"10.5")
        + b"}"
    )
    assert _send(engine, body) is True
