"""Postings go many to a transaction: fewer commits, the same result, no deadlock with
requests, and a bad posting holds back only itself and what comes after it."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from punchcard.errors import InsufficientPoints
from punchcard.services import due, orders
from punchcard.services.loyalty import Loyalty
from punchcard.store.database import open_database
from punchcard.store.tables import orders as orders_table
from punchcard.store.uow import UnitOfWork

from .helpers import START, burritos, new_app

NOW = START + timedelta(hours=1)


def _pending(app: Loyalty, members: list[str], at: datetime, prefix: str) -> None:
    """One closed, not yet posted order per member, closed in the given order."""
    for n, member in enumerate(members):
        app.place_order(burritos(f"{prefix}{n}", member, qty=1 + n % 3), at)


def _post_states(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.select(orders_table.c.external_id, orders_table.c.post_state)).all()
        )


def test_sixty_postings_take_three_transactions_and_post_what_one_by_one_posts(
    engine: sa.Engine,
) -> None:
    app = new_app(engine)
    names = [f"m{n:02d}" for n in range(30)]
    for name in names:
        app.enroll({"member": name}, START)
    _pending(app, names + names, START, "o")  # 60 postings, two per member
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    sa.event.listen(engine, "commit", count)
    assert app.run_due(START) == 60
    sa.event.remove(engine, "commit", count)
    # 60 postings in groups of 25: 25 + 25 + 10, one commit each.
    assert due.POST_GROUP == 25
    assert len(commits) == 3
    assert set(_post_states(engine).values()) == {"posted"}
    for n, name in enumerate(names):
        # qty 1 + n % 3 burritos at 10.00 in each of two orders, 10 points per 1.00.
        assert app.member(name, NOW).posted == 2 * (1 + n % 3) * 100


def test_a_failing_posting_is_retried_alone_after_those_before_it_commit(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app = new_app(engine)
    names = [f"m{n}" for n in range(6)]
    for name in names:
        app.enroll({"member": name}, START)
    _pending(app, names, START, "o")
    with engine.connect() as conn:
        ids = list(
            conn.execute(sa.select(orders_table.c.id).order_by(orders_table.c.close_seq)).scalars()
        )
    bad = ids[3]

    def work(uow: UnitOfWork, order_pk: int, at: datetime) -> None:
        orders.post(uow, order_pk, at)
        if order_pk == bad:
            raise RuntimeError("this posting cannot be done")

    with caplog.at_level(logging.WARNING, "punchcard.worker"), pytest.raises(RuntimeError):
        due._do_group(app.uow, work, due._lock_members_of_orders, ids, START)
    assert "a group of 6 items failed; doing them one by one" in caplog.text
    # The group rolled back whole, then o0-o2 posted one by one; o3 failed and rolled back,
    # and o4, o5 wait for the next run, behind it.
    assert _post_states(engine) == {
        "o0": "posted",
        "o1": "posted",
        "o2": "posted",
        "o3": "pending",
        "o4": "pending",
        "o5": "pending",
    }
    assert app.run_due(START) == 3
    assert set(_post_states(engine).values()) == {"posted"}
    assert [app.member(name, NOW).posted for name in names] == [
        100,
        200,
        300,
        100,
        200,
        300,
    ]


@pytest.mark.postgres
def test_groups_and_transfers_racing_over_the_same_members_never_deadlock(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Postings closed in descending member order would lock members against the order in
    which transfers lock them; a group locks its members in id order first, so neither waits
    for the other in a cycle (PostgreSQL would abort one as a deadlock)."""
    engine = open_database(postgres_url)
    app = new_app(engine)
    names = [f"m{n:02d}" for n in range(40)]
    for name in names:
        app.enroll({"member": name}, START)
    _pending(app, names, START, "seed")
    app.run_due(START)  # everyone has points to move
    _pending(app, list(reversed(names)) * 2, START, "o")
    errors: list[BaseException] = []
    finished = threading.Event()

    def transfers(seed: int) -> None:
        chosen = random.Random(seed)
        other = Loyalty(open_database(postgres_url), app.env_id)
        try:
            while not finished.is_set():
                source, target = chosen.sample(names, 2)
                with contextlib.suppress(InsufficientPoints):
                    other.transfer_points({"member": source, "to": target, "points": 7}, NOW)
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            other.engine.dispose()

    threads = [threading.Thread(target=transfers, args=(n,)) for n in range(6)]
    with caplog.at_level(logging.WARNING, "punchcard.worker"):
        for thread in threads:
            thread.start()
        try:
            done = app.run_due(NOW)
        finally:
            finished.set()
            for thread in threads:
                thread.join()
    assert errors == []
    assert "failed" not in caplog.text
    assert done == 80
    assert set(_post_states(engine).values()) == {"posted"}
    # Transfers only move points: the members hold exactly what their orders earned.
    total = sum(app.member(name, NOW).posted for name in names)
    seeds = sum((1 + n % 3) * 100 for n in range(40))
    assert total == seeds + sum((1 + n % 3) * 100 for n in range(80)) == 23_800
    engine.dispose()
