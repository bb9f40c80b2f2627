"""A gift card hold can not be used at or after its expiry, even before the due work releases it.

Rule 14: something that expires at T can not be used at T. No due work runs between the
expiry and the capture in these tests: that gap (a wall-clock worker not yet round) is the point.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from punchcard.errors import InvalidState
from punchcard.services import gift_cards
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import gift_cards as cards_table
from punchcard.store.tables import holds, ledger_accounts, ledger_postings, outbox

from .helpers import START, new_app

EXPIRES = START + gift_cards.HOLD_LIFETIME


def _snapshot(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            str(table.name): [tuple(r) for r in conn.execute(sa.select(table)).all()]
            for table in (holds, cards_table, ledger_accounts, ledger_postings, outbox)
        }


def _hold_state(app: Loyalty, alias: str) -> str:
    with app.uow() as uow:
        return str(gift_cards.hold_view(uow, alias)["state"])


def test_a_hold_captures_one_second_before_it_expires(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "50.00"}, START)
    assert app.authorize_gift_card("g1", {"amount": "20.00", "hold": "h1"}, START) == 2000
    assert app.gift_card("g1").balance == 3000
    assert app.capture_hold("h1", {"amount": "12.00"}, EXPIRES - timedelta(seconds=1)) == 1200
    assert app.gift_card("g1").balance == 3800  # 50.00 - 12.00 captured; 8.00 back
    assert _hold_state(app, "h1") == "captured"


@pytest.mark.parametrize("late", [timedelta(0), timedelta(microseconds=1), timedelta(days=30)])
def test_a_hold_at_or_after_its_expiry_is_refused_as_a_released_one(
    engine: sa.Engine, late: timedelta
) -> None:
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "50.00"}, START)
    app.authorize_gift_card("g1", {"amount": "20.00", "hold": "h1"}, START)
    before = _snapshot(engine)
    with pytest.raises(InvalidState) as captured:
        app.capture_hold("h1", {}, EXPIRES + late)
    with pytest.raises(InvalidState) as part:
        app.capture_hold("h1", {"amount": "1.00"}, EXPIRES + late)
    with pytest.raises(InvalidState) as voided:
        app.void_hold("h1", EXPIRES + late)
    assert str(captured.value) == str(part.value) == "hold h1 is released: capture is not allowed"
    assert str(voided.value) == "hold h1 is released: void is not allowed"
    assert _snapshot(engine) == before  # nothing taken, nothing recorded
    assert app.gift_card("g1").balance == 3000
    assert _hold_state(app, "h1") == "pending"  # the money stays held until the due work runs

    assert app.run_due(EXPIRES + late) >= 1  # the worker releases it, as always
    assert app.gift_card("g1").balance == 5000
    assert _hold_state(app, "h1") == "released"
    with pytest.raises(InvalidState) as after:  # the same answer once it is released
        app.capture_hold("h1", {}, EXPIRES + late)
    assert str(after.value) == str(captured.value)
    with pytest.raises(InvalidState) as after_void:
        app.void_hold("h1", EXPIRES + late)
    assert str(after_void.value) == str(voided.value)
    assert app.gift_card("g1").balance == 5000


def test_a_void_one_second_before_expiry_releases_the_money(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "50.00"}, START)
    app.authorize_gift_card("g1", {"amount": "20.00", "hold": "h1"}, START)
    app.void_hold("h1", EXPIRES - timedelta(seconds=1))
    assert app.gift_card("g1").balance == 5000
    assert _hold_state(app, "h1") == "voided"
