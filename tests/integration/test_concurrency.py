"""Concurrent spending never overspends: threads and processes racing on one card or one member."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from punchcard.errors import InsufficientFunds, InsufficientPoints, PunchcardError
from punchcard.services import inbound, orders, programs, webhooks
from punchcard.services.loyalty import Loyalty
from punchcard.store.database import create_engine, open_database
from punchcard.store.tables import (
    inbound_events,
    members,
    webhook_deliveries,
    webhook_endpoints,
)
from punchcard.store.uow import UnitOfWork
from punchcard.worker.delivery import Attempt, Deliverer
from punchcard.worker.due_work import claim, release

from ..conftest import EXAMPLE_PROGRAM
from .cursors import run
from .helpers import START, FakeClock, burritos, new_app, send_inbound

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


_WAITING = sa.text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def _queued_behind_the_member(
    engine: sa.Engine, app: Loyalty, member: str, *calls: Callable[[], object]
) -> list[str]:
    """Run the calls at once while another transaction holds the member's lock."""
    held = (
        sa.select(members.c.id)
        .where(members.c.env_id == app.env_id, members.c.external_id == member)
        .with_for_update()
    )
    return _queued_behind(engine, [held], *calls)


def _queued_behind(
    engine: sa.Engine, held: list[sa.Executable], *calls: Callable[[], object]
) -> list[str]:
    """Run the calls at once while another transaction runs `held` (and so holds its locks),
    commit it once all of them wait on a lock, and tell how each ended: "ok" or its error's
    code."""
    with engine.connect() as holder, holder.begin():
        for statement in held:
            holder.execute(statement)

        def ended(call: Callable[[], object]) -> str:
            try:
                call()
            except PunchcardError as error:
                return error.code
            return "ok"

        pool = ThreadPoolExecutor(len(calls))
        futures = [pool.submit(ended, call) for call in calls]
        deadline = time.monotonic() + 10
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as looking:
            # Each look in its own transaction: the activity view is a snapshot per transaction.
            while looking.execute(_WAITING).scalar_one() < len(calls):  # all queued behind it
                assert time.monotonic() < deadline, "the calls never queued behind the lock"
                time.sleep(0.01)
    outcomes = [f.result(timeout=30) for f in futures]
    pool.shutdown()
    return outcomes


@pytest.mark.postgres
def test_order_changes_queued_behind_one_another_see_each_others_effects(
    postgres_url: str,
) -> None:
    """Each one reads the order under its member's lock, so the second sees what the first
    did: a void and a close can not both leave their mark, two closes make one pending lot,
    and two partial refunds both take their points back."""
    engine = open_database(postgres_url)
    app = new_app(engine)
    later = START + timedelta(hours=1)
    app.enroll({"member": "ann"}, START)

    # 500: closed then voided, it posts first (due at its close, rule 14) without making
    # her gold, so the orders below earn the same whichever call ran first.
    app.place_order(burritos("void-close", "ann", qty=5, status="open"), START)
    ended = _queued_behind_the_member(
        engine,
        app,
        "ann",
        lambda: app.void_order({"order": "void-close"}, later),
        lambda: app.close_order({"order": "void-close"}, later),
    )
    assert sorted(ended) in (["invalid_state", "ok"], ["ok", "ok"])  # voided, or closed then voided
    app.run_due(later)
    ann = app.member("ann", later)
    state = app._read(lambda uow: orders.view(uow, "void-close"))["state"]
    assert (state, ann.posted, ann.pending) == ("voided", 0, 0)

    app.place_order(burritos("twice", "ann", qty=10, status="open"), later)
    ended = _queued_behind_the_member(
        engine,
        app,
        "ann",
        lambda: app.close_order({"order": "twice"}, later),
        lambda: app.close_order({"order": "twice"}, later),
    )
    assert sorted(ended) == ["invalid_state", "ok"]
    app.run_due(later)
    ann = app.member("ann", later)
    assert (ann.posted, ann.pending) == (1000, 0)

    app.place_order(burritos("halves", "ann", qty=2), later)
    app.run_due(later)
    one = {"order": "halves", "lines": [{"line": "l1", "qty": 1}]}
    ended = _queued_behind_the_member(
        engine,
        app,
        "ann",
        lambda: app.refund_order(one, later),
        lambda: app.refund_order(one, later),
    )
    assert ended == ["ok", "ok"]
    assert app.member("ann", later).posted == 1000  # the 200 of "halves" taken back whole
    ended = _queued_behind_the_member(
        engine,
        app,
        "ann",
        lambda: app.refund_order(one, later),
        lambda: app.refund_order(one, later),
    )
    assert ended == ["invalid_input", "invalid_input"]  # nothing is left to refund
    engine.dispose()


@pytest.mark.postgres
def test_an_inbound_event_two_workers_took_is_applied_once(postgres_url: str) -> None:
    """A worker whose batch outlived its 60 s claim and the worker that claimed the event
    after it both apply it: the second waits on the event under its lock, finds it done, and
    leaves it. (Checked outside that transaction, both refunded the unit.)"""
    engine = open_database(postgres_url)
    app = new_app(engine)
    app.enroll({"member": "dan"}, START)
    app.place_order(burritos("o1", "dan", qty=3), START)
    app.run_due(START)
    now = datetime.now(UTC)
    body = json.dumps(
        {
            "id": "evt_1",
            "type": "order.refunded",
            "order": {"id": "o1"},
            "refund": {"lines": [{"line": "l1", "qty": 1}]},
        }
    ).encode()
    assert send_inbound(engine, app.env_id, body, now)
    with engine.connect() as conn:
        event = conn.execute(sa.select(inbound_events.c.id)).scalar_one()
    clock = FakeClock(now)
    ended = _queued_behind_the_member(
        engine,
        app,
        "dan",
        lambda: inbound._apply(engine, event, clock),
        lambda: inbound._apply(engine, event, clock),
    )
    assert ended == ["ok", "ok"]
    with engine.connect() as conn:
        state = conn.execute(sa.select(inbound_events.c.state, inbound_events.c.outcome)).one()
    assert tuple(state) == ("done", "applied: refund")
    assert app._read(lambda uow: orders.view(uow, "o1"))["refunded"] == {"l1": 1}
    assert app.member("dan", now).posted == 200  # 300 earned, one 10.00 unit taken back
    engine.dispose()


@pytest.mark.postgres
def test_versions_published_and_activated_at_once_are_numbered_and_activated_once(
    postgres_url: str,
) -> None:
    engine = open_database(postgres_url)
    app = new_app(engine)
    versions_lock = sa.select(  # what publish and activate take
        sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"punchcard program versions {app.env_id}"))
    )
    source = EXAMPLE_PROGRAM.read_text()
    ended = _queued_behind(
        engine,
        [versions_lock],
        lambda: app._write(lambda uow: programs.publish(uow, source, START, live_from=None)),
        lambda: app._write(lambda uow: programs.publish(uow, source, START, live_from=None)),
    )
    assert ended == ["ok", "ok"]
    numbers = [v.version for v in app._read(lambda uow: programs.versions(uow))]
    assert numbers == [1, 2, 3]
    later = START + timedelta(days=1)
    ended = _queued_behind(
        engine,
        [versions_lock],
        lambda: app._write(lambda uow: programs.activate(uow, 2, later, START)),
        lambda: app._write(lambda uow: programs.activate(uow, 2, later, START)),
    )
    assert sorted(ended) == ["invalid_state", "ok"]
    engine.dispose()


def _ann_active_under_30_days(postgres_url: str) -> tuple[sa.Engine, str, Loyalty]:
    """A program whose balances expire after 30 days of inactivity, and ann, who ordered at
    START (posted as it closed: the program has no accrual delay)."""
    engine = open_database(postgres_url)
    program = EXAMPLE_PROGRAM.read_text().replace(
        "expiry: {months_after_earn: 12}", "expiry: {inactivity_days: 30}"
    )
    app = new_app(engine, program)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=6), START)
    return engine, program, app


@pytest.mark.postgres
def test_a_publish_during_a_members_activity_plans_inactivity_from_that_activity(
    postgres_url: str,
) -> None:
    """A publish that changes the inactivity days re-plans every member's inactivity expiry
    from their last activity. A redeem that moves the activity while the publish runs must
    not be overwritten by a plan from the activity before it."""
    engine, program, app = _ann_active_under_30_days(postgres_url)
    app.run_due(START)  # active at START
    later = START + timedelta(days=10)
    ann = sa.and_(members.c.env_id == app.env_id, members.c.external_id == "ann")
    redeeming = (  # what the redeem writes, under ann's lock, not yet committed
        sa.update(members)
        .where(ann)
        .values(last_activity_at=later, inactivity_due_at=later + timedelta(days=30))
    )
    ended = _queued_behind(
        engine,
        [redeeming],
        lambda: app.publish(program.replace("inactivity_days: 30", "inactivity_days: 45"), later),
    )
    assert ended == ["ok"]
    with engine.connect() as conn:
        due = conn.execute(sa.select(members.c.inactivity_due_at).where(ann)).scalar_one()
    assert due == later + timedelta(days=45)
    engine.dispose()


@pytest.mark.postgres
def test_a_publish_that_plans_members_alike_does_not_wait_for_a_member(
    postgres_url: str,
) -> None:
    """A version that changes only promotions and rewards re-plans no one: it goes live while
    a request holds a member's lock, instead of waiting for it (and holding every other
    member meanwhile)."""
    engine, program, app = _ann_active_under_30_days(postgres_url)
    app.run_due(START)
    later = START + timedelta(days=10)
    renamed = program.replace("name: Burrito Rewards", "name: Burrito Rewards 2")
    assert renamed != program
    ann = sa.and_(members.c.env_id == app.env_id, members.c.external_id == "ann")
    with engine.connect() as holder, holder.begin():
        holder.execute(sa.select(members.c.id).where(ann).with_for_update())

        def publish(source: str) -> None:
            def under_a_time_limit(uow: UnitOfWork) -> None:
                uow.conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                programs.publish(uow, source, later, live_from=later)

            app._write(under_a_time_limit)

        publish(renamed)  # does not wait for ann
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            publish(program.replace("inactivity_days: 30", "inactivity_days: 45"))  # waits
    numbers = [v.version for v in app._read(lambda uow: programs.versions(uow))]
    assert numbers == [1, 2]
    with engine.connect() as conn:
        due = conn.execute(sa.select(members.c.inactivity_due_at).where(ann)).scalar_one()
    assert due == START + timedelta(days=30)  # as planned when ann was last active
    engine.dispose()


@pytest.mark.postgres
def test_two_secret_rotations_at_once_keep_both_secrets(postgres_url: str) -> None:
    engine = open_database(postgres_url)
    app = new_app(engine)
    with engine.begin() as conn:
        made = webhooks.create_endpoint(
            conn, app.env_id, {"url": "http://127.0.0.1:9/hooks"}, START, allow_private=True
        )
    endpoint = sa.select(webhook_endpoints.c.id).where(webhook_endpoints.c.id == made["id"])
    handed: list[str] = []

    def rotate() -> None:
        with engine.begin() as conn:
            handed.append(webhooks.rotate_secret(conn, app.env_id, made["id"], START)["secret"])

    assert _queued_behind(engine, [endpoint.with_for_update()], rotate, rotate) == ["ok", "ok"]
    with engine.connect() as conn:
        row = webhooks.endpoint_row(conn, app.env_id, made["id"])
    kept = [s["secret"] for s in webhooks.signing_secrets(row, START)]
    assert sorted(kept) == sorted(handed)  # the later one signs, the earlier one for a day
    engine.dispose()


@pytest.mark.postgres
def test_an_endpoint_enabled_while_its_failures_are_recorded_stays_enabled(
    postgres_url: str,
) -> None:
    """The owner turns a failing endpoint back on (which forgets how long it has failed)
    while the deliverer records one more failure: the record must start from the endpoint
    as the owner left it, not from what it read before, which would disable it again."""
    engine = open_database(postgres_url)
    app = new_app(engine)
    with engine.begin() as conn:
        made = webhooks.create_endpoint(
            conn, app.env_id, {"url": "http://127.0.0.1:9/hooks"}, START, allow_private=True
        )
    app.enroll({"member": "ann"}, START)
    run(Deliverer(engine, FakeClock(START), threads=1))  # refused: the event waits as a delivery
    now = START + timedelta(days=6)
    endpoint = webhook_endpoints.c.id == made["id"]
    with engine.begin() as conn:  # failing for six days, and not yet told so
        conn.execute(sa.update(webhook_endpoints).where(endpoint).values(failing_since=START))
        delivery = conn.execute(sa.select(webhook_deliveries).limit(1)).one()
        row = conn.execute(sa.select(webhook_endpoints).where(endpoint)).one()
    deliverer = Deliverer(engine, FakeClock(now), threads=1)
    failed = Attempt(delivery, None, "ConnectError: refused", 1)
    enabling = (  # what PATCH {"enabled": true} writes, not yet committed
        sa.update(webhook_endpoints)
        .where(endpoint)
        .values(state="enabled", disabled_reason=None, failing_since=None)
    )
    ended = _queued_behind(engine, [enabling], lambda: deliverer._record(row, [failed], now))
    assert ended == ["ok"]
    with engine.connect() as conn:
        state = conn.execute(
            sa.select(webhook_endpoints.c.state, webhook_endpoints.c.failing_since).where(endpoint)
        ).one()
    assert tuple(state) == ("enabled", now)  # failing since this failure, not six days
    engine.dispose()


@pytest.mark.postgres
def test_a_publish_in_progress_does_not_hold_up_a_workers_lease(postgres_url: str) -> None:
    """Publishes queue on their own lock, not on the environment's row, which a worker
    updates to take and give back its lease: a worker is never held behind a publish."""
    engine = open_database(postgres_url)
    app = new_app(engine)
    with UnitOfWork(engine, app.env_id) as uow:
        programs._lock_versions(uow)  # held as a publish holds it, until it commits
        with ThreadPoolExecutor(1) as pool:
            leased = pool.submit(claim, engine, "worker", START, app.env_id).result(timeout=5)
            assert leased == [app.env_id]
            pool.submit(release, engine, app.env_id, "worker", START).result(timeout=5)
    engine.dispose()
