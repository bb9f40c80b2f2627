"""Reward names in an order: a name given for a member means one of that member's own rewards.

Another member's alias must never change what a name means: bob's `five-off` is his reward of
that id even when ann holds a reward aliased `five-off` (an alias taken before a later version
added `five-off` to the catalogue; redeeming one now is refused).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from punchcard.errors import InvalidInput, NotFound
from punchcard.services import orders, programs
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import orders as orders_table
from punchcard.store.uow import UnitOfWork

from ..conftest import EXAMPLE_PROGRAM
from .helpers import START, burritos, new_app

LATER = START + timedelta(minutes=1)
# Version 1 has no `five-off`: ann may name her ten-off that way; version 2 adds `five-off`.
V1 = (
    EXAMPLE_PROGRAM.read_text()
    .replace("id: five-off", "id: ten-off")
    .replace('amount_off: "5.00"', 'amount_off: "10.00"')
)
V2 = V1 + '  - {id: five-off, cost: 500, valid_days: 60, discount: {amount_off: "5.00"}}\n'


def _app(engine: sa.Engine) -> Loyalty:
    """ann holds a ten-off aliased `five-off`; bob holds a `five-off` without an alias."""
    app = new_app(engine, V1)
    for member in ("ann", "bob"):
        app.enroll({"member": member}, START)
        app.place_order(burritos(f"earn-{member}", member, qty=5), START)  # 500 points
    app.run_due(START)
    app.redeem({"member": "ann", "reward": "ten-off", "as": "five-off"}, START)
    app.publish(V2, LATER)
    app.redeem({"member": "bob", "reward": "five-off"}, LATER)
    return app


def _quote(app: Loyalty, data: dict[str, Any]) -> tuple[int, list[str]]:
    with UnitOfWork(app.engine, app.env_id) as uow:
        outcome, applicable = orders.quote(uow, data, LATER)
        return outcome.points, applicable


def _rewards(app: Loyalty, member: str) -> dict[str, list[str]]:
    return app.member(member, LATER).rewards


def test_another_members_alias_does_not_hide_a_reward_id(engine: sa.Engine) -> None:
    app = _app(engine)
    # 10.00 less bob's own five-off: 5.00 qualifies, 50 points.
    assert _quote(app, burritos("q", "bob", rewards=["five-off"])) == (50, ["five-off"])
    app.place_order(burritos("b1", "bob", status="open", rewards=["five-off"]), LATER)
    assert _rewards(app, "bob")["reserved"] == ["five-off"]
    app.edit_order({"order": "b1", "rewards": ["five-off"]}, LATER)  # keeps the reserved one
    app.close_order({"order": "b1"}, LATER)
    assert _rewards(app, "bob")["used"] == ["five-off"]
    assert _rewards(app, "ann")["available"] == ["ten-off"]


def test_a_members_own_alias_comes_before_a_reward_id(engine: sa.Engine) -> None:
    app = _app(engine)
    # ann's `five-off` is her ten-off (10.00 off: nothing qualifies), not a five-off she lacks.
    assert _quote(app, burritos("q", "ann", rewards=["five-off"])) == (0, ["five-off"])
    app.place_order(burritos("a1", "ann", rewards=["five-off"]), LATER)
    assert _rewards(app, "ann")["used"] == ["ten-off"]
    assert _rewards(app, "bob")["available"] == ["five-off"]


def test_another_members_alias_that_is_no_reward_id_is_not_found(engine: sa.Engine) -> None:
    app = new_app(engine)
    for member in ("ann", "bob"):
        app.enroll({"member": member}, START)
    app.place_order(burritos("o1", "ann", qty=5), START)
    app.run_due(START)
    app.redeem({"member": "ann", "reward": "five-off", "as": "treat"}, START)
    with pytest.raises(NotFound, match="member holds no reward 'treat'"):
        app.place_order(burritos("b1", "bob", rewards=["treat"]), START)
    with pytest.raises(NotFound, match="no reward 'nothing'"):
        app.place_order(burritos("b1", "bob", rewards=["nothing"]), START)


def test_an_alias_that_is_a_reward_id_is_refused_at_redemption(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=5), START)
    app.run_due(START)
    for member, alias in (("ann", "five-off"), ("ann", "free-burrito"), ("zed", "five-off")):
        with pytest.raises(InvalidInput, match=f"redeem.as: '{alias}' is a reward id"):
            app.redeem({"member": member, "reward": "five-off", "as": alias}, START)
    view = app.member("ann", START)
    assert (view.posted, view.rewards["available"]) == (500, [])


def test_a_dropped_reward_keeps_the_terms_of_the_version_live_at_its_issue(
    engine: sa.Engine,
) -> None:
    """Version 2 ($7 off) was activated after version 3 ($5) went live, so bob's five-off was
    issued under version 2; once version 4 drops it, an order takes $7 off, not the $5 of
    the highest-numbered version live by then."""
    demo = EXAMPLE_PROGRAM.read_text()
    seven = demo.replace('amount_off: "5.00"', 'amount_off: "7.00"')
    dropped = demo.replace(
        '  - id: five-off\n    cost: 500\n    valid_days: 60\n    discount: {amount_off: "5.00"}\n',
        "",
    )
    assert "five-off" not in dropped
    app = new_app(engine, demo)

    def at(minutes: int) -> datetime:
        return START + timedelta(minutes=minutes)

    app._write(lambda uow: programs.publish(uow, seven, at(1), live_from=None))
    app._write(lambda uow: programs.publish(uow, demo, at(1), live_from=at(1)))
    app._write(lambda uow: programs.activate(uow, 2, at(2), at(2)))
    app.enroll({"member": "bob"}, at(2))
    app.place_order(burritos("earn", "bob", qty=5), at(2))
    app.run_due(at(2))
    app.redeem({"member": "bob", "reward": "five-off"}, at(3))
    app._write(lambda uow: programs.publish(uow, dropped, at(4), live_from=at(4)))
    app.place_order(burritos("use", "bob", qty=2, rewards=["five-off"]), at(5))
    with engine.connect() as conn:
        fixed = conn.execute(
            sa.select(orders_table.c.line_discounts).where(orders_table.c.external_id == "use")
        ).scalar_one()
    assert fixed == {"l1": 700}
