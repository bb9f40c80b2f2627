"""Concurrent spending never overspends: threads and processes racing on one card or one member."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from punchcard.errors import InsufficientFunds, InsufficientPoints
from punchcard.services.loyalty import Loyalty
from punchcard.store.database import create_engine, open_database

from .helpers import START, burritos, new_app

NOW = START + timedelta(hours=1)


def _redeem_card(url: str, env_id: str, attempts: int) -> list[int]:
    engine = create_engine(url)
    app = Loyalty(engine, env_id)
    approved = []
    for _ in range(attempts):
        try:
            approved.append(app.redeem_gift_card("g1", {"amount": "7.00"}, NOW))
        except InsufficientFunds:
            approved.append(0)
    engine.dispose()
    return approved


def _redeem_points(url: str, env_id: str, attempts: int) -> int:
    engine = create_engine(url)
    app = Loyalty(engine, env_id)
    won = 0
    for _ in range(attempts):
        try:
            app.redeem({"member": "ann", "reward": "five-off"}, NOW)
            won += 1
        except InsufficientPoints:
            pass
    engine.dispose()
    return won


def test_threads_racing_on_one_gift_card_never_overspend(
    database_url: str, engine: sa.Engine
) -> None:
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "100.00"}, START)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: _redeem_card(database_url, app.env_id, 3), range(8)))
    approved = [a for batch in results for a in batch]
    assert sum(approved) == 9800  # fourteen 7.00 redemptions fit in 100.00
    assert approved.count(700) == 14
    assert app.gift_card("g1").balance == 200


def test_threads_racing_on_one_members_points_never_overspend(
    database_url: str, engine: sa.Engine
) -> None:
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=26), START)  # 260.00 -> 2600 points
    app.run_due(START)
    with ThreadPoolExecutor(max_workers=8) as pool:
        won = sum(pool.map(lambda _: _redeem_points(database_url, app.env_id, 2), range(8)))
    assert won == 5  # 5 x 500 of 2600
    assert app.member("ann", NOW).posted == 100


@pytest.mark.postgres
def test_processes_racing_on_one_gift_card_never_overspend(postgres_url: str) -> None:
    engine = open_database(postgres_url)
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "100.00"}, START)
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(_redeem_card, [(postgres_url, app.env_id, 5)] * 4)
    approved = [a for batch in results for a in batch]
    assert sum(approved) == 9800
    assert app.gift_card("g1").balance == 200
    engine.dispose()
