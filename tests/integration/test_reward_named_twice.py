"""An order names each reward once. One alias twice, or a reward's alias and its id when the
member holds no other reward of that id, answered `409 reward r1 is expired` about a reward
that was not; it is invalid input naming the second mention, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from punchcard.errors import InvalidInput, RewardUnavailable
from punchcard.services import orders
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import orders as orders_table
from punchcard.store.tables import rewards as rewards_table
from punchcard.store.uow import UnitOfWork

from .helpers import START, burritos, new_app


def _ann(engine: sa.Engine, aliases: tuple[str, ...] = ("r1",)) -> Loyalty:
    """ann holds a five-off for each alias, issued in that order (the same expiry)."""
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("earn", "ann", qty=5 * len(aliases)), START)  # 500 points each
    app.run_due(START)
    for alias in aliases:
        app.redeem({"member": "ann", "reward": "five-off", "as": alias}, START)
    return app


def _held(app: Loyalty) -> list[tuple[object, ...]]:
    """Each reward's alias, state and the order holding it."""
    with app.engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.select(rewards_table.c.alias, rewards_table.c.state, orders_table.c.external_id)
                .outerjoin(orders_table, orders_table.c.id == rewards_table.c.order_id)
                .order_by(rewards_table.c.id)
            )
        ]


def _place(app: Loyalty, data: dict[str, Any]) -> dict[str, Any]:
    with UnitOfWork(app.engine, app.env_id) as uow:
        view = orders.place(uow, data, START)
        uow.commit()
    return view


TWICE = "rewards[1]: the reward 'r1' is named twice (rewards[0] names it too)"


@pytest.mark.parametrize(
    "named",
    [["r1", "r1"], ["five-off", "r1"], ["r1", "five-off"]],
)
@pytest.mark.parametrize("status", ["open", "closed"])
def test_a_reward_named_twice_is_invalid_input_and_changes_nothing(
    engine: sa.Engine, named: list[str], status: str
) -> None:
    app = _ann(engine)
    with pytest.raises(InvalidInput) as refused:
        _place(app, burritos("o1", "ann", status=status, rewards=named))
    assert refused.value.message == TWICE
    assert _held(app) == [("r1", "available", None)]
    with app.engine.connect() as conn:
        assert conn.execute(sa.select(orders_table.c.external_id)).scalars().all() == ["earn"]
    with UnitOfWork(app.engine, app.env_id) as uow, pytest.raises(InvalidInput) as quoted:
        orders.quote(uow, burritos("q", "ann", rewards=named), START)
    assert quoted.value.message == TWICE


def test_an_edit_naming_a_held_reward_twice_is_invalid_input(engine: sa.Engine) -> None:
    app = _ann(engine)
    _place(app, burritos("o1", "ann", status="open", rewards=["r1"]))
    for named in (["r1", "r1"], ["r1", "five-off"], ["five-off", "r1"]):
        with pytest.raises(InvalidInput) as refused:
            app.edit_order({"order": "o1", "rewards": named}, START)
        assert refused.value.message == TWICE
    assert _held(app) == [("r1", "reserved", "o1")]


def test_named_twice_wins_over_a_name_that_is_not_found(engine: sa.Engine) -> None:
    """Malformed input comes before not_found, whatever the order of the list."""
    app = _ann(engine)
    with pytest.raises(InvalidInput) as refused:
        _place(app, burritos("o1", "ann", rewards=["nothing", "r1", "r1"]))
    assert refused.value.message == (
        "rewards[2]: the reward 'r1' is named twice (rewards[1] names it too)"
    )


def test_an_id_beside_an_alias_takes_another_reward_of_that_id(engine: sa.Engine) -> None:
    """An alias names its reward before any id picks one: the id took r1 (expiring first) and
    r1's alias was then refused as expired."""
    app = _ann(engine, ("r1", "r2"))
    view = _place(app, burritos("o1", "ann", status="open", rewards=["five-off", "r1"]))
    assert sorted(view["rewards"]) == ["r1", "r2"]
    assert _held(app) == [("r1", "reserved", "o1"), ("r2", "reserved", "o1")]


def test_one_id_twice_is_two_rewards_of_that_id(engine: sa.Engine) -> None:
    app = _ann(engine, ("r1", "r2"))
    _place(app, burritos("o1", "ann", status="open", rewards=["five-off", "five-off"]))
    assert _held(app) == [("r1", "reserved", "o1"), ("r2", "reserved", "o1")]


def test_one_id_twice_with_one_held_is_still_unavailable(engine: sa.Engine) -> None:
    """An id asks for any reward of that id: twice, for two; holding one is not naming it twice."""
    app = _ann(engine)
    with pytest.raises(RewardUnavailable) as refused:
        _place(app, burritos("o1", "ann", rewards=["five-off", "five-off"]))
    assert refused.value.message == "member holds no available five-off"
    assert _held(app) == [("r1", "available", None)]
