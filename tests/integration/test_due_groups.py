"""Postings go many to a transaction: fewer commits, the same result, no deadlock with
requests, and a bad posting is set aside while the others post (test_due_set_aside.py)."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from punchcard.errors import InsufficientPoints
from punchcard.ledger.lots import add_months
from punchcard.services import due, programs
from punchcard.services.loyalty import Loyalty
from punchcard.store.database import open_database
from punchcard.store.tables import lots, members, outbox
from punchcard.store.tables import orders as orders_table
from punchcard.store.uow import UnitOfWork

from .helpers import START, burritos, delayed, new_app

NOW = START + timedelta(hours=1)
DELAY = timedelta(minutes=1)
DELAYED = delayed("PT1M")  # posting a minute after the close, the worker's posting to do


def _pending(app: Loyalty, names: list[str], at: datetime, prefix: str) -> None:
    """One closed, not yet posted order per name, a second apart, in the given order (each
    due a minute after it: the program is DELAYED)."""
    for n, name in enumerate(names):
        app.place_order(burritos(f"{prefix}{n}", name, qty=1 + n % 3), at + timedelta(seconds=n))


@contextlib.contextmanager
def _commits(engine: sa.Engine) -> Iterator[list[object]]:
    """The transactions committed inside the block, one entry each."""
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    sa.event.listen(engine, "commit", count)
    try:
        yield commits
    finally:
        sa.event.remove(engine, "commit", count)


def _post_states(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.select(orders_table.c.external_id, orders_table.c.post_state)).all()
        )


@pytest.mark.parametrize(("budget_s", "transactions"), [(60.0, 3), (0.0, 60)])
def test_sixty_postings_due_at_sixty_times_take_three_transactions(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, budget_s: float, transactions: int
) -> None:
    """25 to a group while a group stays within its time budget: with time to spare, 25 + 25
    + 10; with none, each group stops after its first posting. (Sixty members: a member's
    second order would post the first itself, as due work before it.)"""
    monkeypatch.setattr(due, "GROUP_BUDGET_S", budget_s)
    app = new_app(engine, DELAYED)
    names = [f"m{n:02d}" for n in range(60)]
    for name in names:
        app.enroll({"member": name}, START)
    for n, name in enumerate(names):  # 60 postings, each due at its own second
        app.place_order(burritos(f"o{n}", name, qty=1 + n % 3), START + timedelta(seconds=n))
    with _commits(engine) as commits:
        assert app.run_due(NOW) == 60
    assert due.POST_GROUP == 25
    assert len(commits) == transactions
    assert set(_post_states(engine).values()) == {"posted"}
    for n, name in enumerate(names):  # qty 1 + n % 3 at 10.00, 10 points per 1.00
        assert app.member(name, NOW).posted == (1 + n % 3) * 100
    with engine.connect() as conn:
        posted_at = list(
            conn.execute(
                sa.select(outbox.c.created_at).where(outbox.c.type == "points.posted")
            ).scalars()
        )
    # Each order posted at its own due time, not at the group's.
    assert len(posted_at) == len(set(posted_at)) == 60
    with engine.connect() as conn:
        numbered = conn.execute(
            sa.select(outbox.c.member_id, outbox.c.member_seq)
            .where(outbox.c.member_id.is_not(None))
            .order_by(outbox.c.id)
        ).all()
        last_seq = dict(conn.execute(sa.select(members.c.id, members.c.event_seq)).all())
    seqs: dict[int, list[int]] = {}
    for member_id, seq in numbered:
        seqs.setdefault(member_id, []).append(seq)
    assert len(seqs) == 60
    for member_id, got in seqs.items():  # each member's events numbered 1, 2, ... in order
        assert got == list(range(1, len(got) + 1)) and last_seq[member_id] == len(got)


def test_a_posting_that_makes_other_work_due_first_is_done_alone(engine: sa.Engine) -> None:
    """Ann's posting completes a punch card whose reward lapses a day later; Bob's order is
    due two days later. The lapse comes between them, so they are not one group."""
    source = DELAYED.replace("goal: 10", "goal: 1").replace("valid_days: 30", "valid_days: 1")
    app = new_app(engine, program=source)
    app.enroll({"member": "ann"}, START)
    app.enroll({"member": "bob"}, START)
    app.place_order(burritos("o1", "ann"), START)
    app.place_order(burritos("o2", "bob"), START + timedelta(days=2))
    # Two postings and ann's lapse (bob's reward lapses a day after his posting, not yet).
    assert app.run_due(START + timedelta(days=2, hours=12)) == 3
    with engine.connect() as conn:
        events = conn.execute(
            sa.select(outbox.c.type, members.c.external_id, outbox.c.created_at)
            .join(members, members.c.id == outbox.c.member_id)
            .where(outbox.c.type.in_(["points.posted", "reward.issued", "reward.expired"]))
            .order_by(outbox.c.id)
        ).all()
    assert [(kind, who) for kind, who, _ in events] == [
        ("points.posted", "ann"),
        ("reward.issued", "ann"),
        ("reward.expired", "ann"),
        ("points.posted", "bob"),
        ("reward.issued", "bob"),
    ]
    assert [at - events[0][2] for *_, at in events] == [
        timedelta(0),
        timedelta(0),
        timedelta(days=1),
        timedelta(days=2),
        timedelta(days=2),
    ]


def test_a_failing_posting_is_set_aside_and_the_others_post(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(due, "GROUP_BUDGET_S", 60.0)  # groups as large as the due postings
    app = new_app(engine, DELAYED)
    names = [f"m{n}" for n in range(6)]
    for name in names:
        app.enroll({"member": name}, START)
    for n, name in enumerate(names):
        app.place_order(burritos(f"o{n}", name, qty=1 + n % 3), START + timedelta(seconds=n))
    with engine.begin() as conn:  # m3's stored punch cards are damaged: its posting fails
        conn.execute(sa.update(members).where(members.c.external_id == "m3").values(punches=[1]))
    with caplog.at_level(logging.WARNING, "punchcard.worker"):
        assert app.run_due(NOW) == 5
    # Each pass tries the postings left as a group, which fails, and does the first alone:
    # o0, o1, o2, and then o3, which fails alone and is set aside; o4 and o5 post as a group.
    assert [r.getMessage() for r in caplog.records][:4] == [
        f"a group of {n} postings failed; doing the first alone" for n in (6, 5, 4, 3)
    ]
    assert (
        caplog.records[4]
        .getMessage()
        .startswith("due work failed: the posting of order 'o3' of member 'm3'")
    )
    assert len(caplog.records) == 5
    assert _post_states(engine) == {
        "o0": "posted",
        "o1": "posted",
        "o2": "posted",
        "o3": "pending",
        "o4": "posted",
        "o5": "posted",
    }
    with engine.begin() as conn:
        conn.execute(sa.update(members).where(members.c.external_id == "m3").values(punches={}))
    assert app.run_due(NOW) == 0  # not before its next try, 10 s after it failed
    assert app.run_due(NOW + timedelta(seconds=10)) == 1
    assert set(_post_states(engine).values()) == {"posted"}
    assert [app.member(name, NOW).posted for name in names] == [100, 200, 300, 100, 200, 300]


@pytest.mark.postgres
def test_groups_and_transfers_racing_over_the_same_members_never_deadlock(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Postings closed in descending member order would lock members against the order in
    which transfers lock them; a group locks its members in id order first, so neither waits
    for the other in a cycle (PostgreSQL would abort one as a deadlock)."""
    engine = open_database(postgres_url)
    app = new_app(engine, DELAYED)
    names = [f"m{n:02d}" for n in range(40)]
    for name in names:
        app.enroll({"member": name}, START)
    _pending(app, names, START, "seed")
    assert app.run_due(START + timedelta(minutes=2)) == 40  # everyone has points to move
    _pending(app, list(reversed(names)) * 2, START + timedelta(minutes=3), "o")
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
    # A transfer first posts its members' due orders itself (rule 14), so the worker posts
    # the rest: each of the 80 once, by one or the other.
    assert done <= 80
    assert set(_post_states(engine).values()) == {"posted"}
    with engine.connect() as conn:
        posted = conn.execute(
            sa.select(sa.func.count()).where(outbox.c.type == "points.posted")
        ).scalar_one()
    assert posted == 40 + 80
    # Transfers only move points: the members hold exactly what their orders earned.
    total = sum(app.member(name, NOW).posted for name in names)
    seeds = sum((1 + n % 3) * 100 for n in range(40))
    assert total == seeds + sum((1 + n % 3) * 100 for n in range(80)) == 23_800
    engine.dispose()


def test_a_group_that_spans_a_new_version_posts_each_order_under_its_own(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten postings a second apart, version 2 (points expire after 6 months instead of 12)
    live from the sixth: its going live is due work at that moment, between two groups, and
    each posting follows the version live at its own time."""
    monkeypatch.setattr(due, "GROUP_BUDGET_S", 60.0)
    app = new_app(engine, DELAYED)
    switch = START + DELAY + timedelta(seconds=5)
    source = DELAYED
    assert source.count("months_after_earn: 12") == 1
    with UnitOfWork(engine, app.env_id) as uow:
        programs.publish(
            uow,
            source.replace("months_after_earn: 12", "months_after_earn: 6"),
            START,
            live_from=switch,
        )
        uow.commit()
    names = [f"m{n}" for n in range(10)]
    for name in names:
        app.enroll({"member": name}, START)
    _pending(app, names, START, "o")
    with _commits(engine) as commits:
        assert app.run_due(NOW) == 10 + 1  # the postings, and version 2 going live
    # Five postings; version 2 going live; the posting due at that same moment (after it,
    # alone, as kinds at one moment are); the last four.
    assert len(commits) == 4
    with engine.connect() as conn:
        expiry = dict(
            conn.execute(
                sa.select(orders_table.c.external_id, lots.c.expires_at).join(
                    lots, lots.c.order_id == orders_table.c.id
                )
            ).all()
        )
    for n in range(10):
        posted = START + DELAY + timedelta(seconds=n)
        months = 12 if posted < switch else 6
        assert expiry[f"o{n}"] == add_months(posted, months, ZoneInfo("America/Chicago")), n
