"""Due work that fails for one member is set aside and tried again after a doubling pause:
every other member's work goes on, the failed member's later work waits with it (its own
time order holds), `punchcard audit` lists it, and it is done once it can be. The failures
are real: a trigger on the test database refuses one item's write.

Also: an order id of 200 characters posts (its ledger reference, "order:" and the id,
overflowed the 200 characters of `ledger_transactions.reference` on PostgreSQL)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from punchcard.audit import run_audit
from punchcard.services import due, programs
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import due_failures, holds, members, orders, outbox, rewards

from .helpers import START, burritos, delayed, new_app

NOW = START + timedelta(hours=1)
DELAY = timedelta(minutes=1)
DELAYED = delayed("PT1M")  # posting a minute after the close, the worker's posting to do
WALL = datetime(2026, 3, 3, 16, 0, tzinfo=UTC)  # the wall clock the pauses are timed by
SET_ASIDE = "no due work set aside after failing"


def _refuse(engine: sa.Engine, table: str, condition: str) -> None:
    """A trigger that refuses one row's write (`condition` on NEW or OLD) with 'refused'."""
    event = "INSERT" if "NEW." in condition else "UPDATE"
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_one BEFORE {event} ON {table} WHEN {condition}"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
            return
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF {condition} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER refuse_one BEFORE {event} ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION refuse_one()"
        )


def _allow(engine: sa.Engine, table: str) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER refuse_one")
        else:
            conn.exec_driver_sql(f"DROP TRIGGER refuse_one ON {table}")
            conn.exec_driver_sql("DROP FUNCTION refuse_one()")


def _refused(engine: sa.Engine) -> str:
    """The stored error: the database's own exception and its first line."""
    return (
        "IntegrityError: refused" if engine.dialect.name == "sqlite" else "RaiseException: refused"
    )


def _post_states(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(orders.c.external_id, orders.c.post_state)).all())


def _set_aside(engine: sa.Engine) -> list[tuple[str, int, int, datetime, datetime, str]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(
                    due_failures.c.kind,
                    due_failures.c.item_id,
                    due_failures.c.failures,
                    due_failures.c.first_failed_at,
                    due_failures.c.next_try_at,
                    due_failures.c.error,
                ).order_by(due_failures.c.id)
            ).all()
        ]


def _id(engine: sa.Engine, table: sa.Table, external_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(table.c.id).where(table.c.external_id == external_id)).scalar()
        )


def _audit(engine: sa.Engine) -> list[str]:
    return next(f.violations for f in run_audit(engine, WALL) if f.check == SET_ASIDE)


def _six_members_with_a_posting_each(engine: sa.Engine) -> Loyalty:
    """m0..m5, each with one order (o0..o5) due a minute and its own second after START."""
    app = new_app(engine, DELAYED)
    for n in range(6):
        app.enroll({"member": f"m{n}"}, START)
    for n in range(6):
        app.place_order(burritos(f"o{n}", f"m{n}", qty=1 + n % 3), START + timedelta(seconds=n))
    return app


def test_a_posting_that_fails_is_set_aside_and_everyone_elses_goes_on(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(due, "GROUP_BUDGET_S", 60.0)  # groups as large as the due postings
    app = _six_members_with_a_posting_each(engine)
    _refuse(engine, "ledger_transactions", "NEW.reference = 'order:o3'")
    with caplog.at_level(logging.WARNING, "punchcard.worker"):
        assert due.run_due(app.uow, NOW, WALL) == 5  # it raised, and o4 and o5 waited for o3
    assert _post_states(engine) == {
        "o0": "posted",
        "o1": "posted",
        "o2": "posted",
        "o3": "pending",
        "o4": "posted",
        "o5": "posted",
    }
    o3_due = (START + DELAY + timedelta(seconds=3)).astimezone(UTC)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("due work")] == [
        f"due work failed: the posting of order 'o3' of member 'm3' in environment {app.env_id},"
        f" due at {o3_due.isoformat()} (failure 1); set aside until"
        f" {(WALL + timedelta(seconds=10)).isoformat()}, the rest goes on"
    ]
    o3 = _id(engine, orders, "o3")
    error = _refused(engine)
    first_try = ("posting", o3, 1, WALL, WALL + timedelta(seconds=10), error)
    assert _set_aside(engine) == [first_try]
    assert _audit(engine) == [
        f"posting of order 'o3' of member 'm3' in environment {app.env_id}, due at"
        f" {o3_due.isoformat()}: failed 1x since {WALL.isoformat()} ({error}), next try at"
        f" {(WALL + timedelta(seconds=10)).isoformat()}"
    ]

    # Later work: m0's next order posts; m3's waits behind o3, so m3's postings stay in time
    # order. (Placing o7 does m3's due work first: o3 fails there too and the request goes on.)
    later = NOW + timedelta(minutes=1)
    app.place_order(burritos("o6", "m0"), later)
    app.place_order(burritos("o7", "m3", qty=2), later)
    later += DELAY  # o6 and o7 are due
    assert due.run_due(app.uow, later, WALL + timedelta(seconds=9)) == 1
    assert _post_states(engine)["o6"] == "posted"
    assert _post_states(engine)["o7"] == "pending"
    assert _set_aside(engine) == [first_try]  # not tried before its pause is over

    # Its next try comes: refused again, the pause doubles.
    assert due.run_due(app.uow, later, WALL + timedelta(seconds=10)) == 0
    assert _set_aside(engine) == [("posting", o3, 2, WALL, WALL + timedelta(seconds=30), error)]

    # Once the database takes it, the next try posts o3, then o7, and forgets the failure.
    _allow(engine, "ledger_transactions")
    assert due.run_due(app.uow, later, WALL + timedelta(seconds=29)) == 0  # still paused
    assert due.run_due(app.uow, later, WALL + timedelta(seconds=30)) == 2
    assert set(_post_states(engine).values()) == {"posted"}
    assert _set_aside(engine) == []
    assert _audit(engine) == []
    assert [app.member(f"m{n}", later).posted for n in range(6)] == [200, 200, 300, 300, 200, 300]
    with engine.connect() as conn:
        m3_postings = conn.execute(
            sa.select(outbox.c.payload["order"].as_string(), outbox.c.created_at)
            .join(members, members.c.id == outbox.c.member_id)
            .where(members.c.external_id == "m3", outbox.c.type == "points.posted")
            .order_by(outbox.c.id)
        ).all()
    assert [tuple(r) for r in m3_postings] == [
        ("o3", o3_due),
        ("o7", later.astimezone(UTC)),
    ]


def test_a_reward_that_can_not_lapse_holds_back_only_its_member(engine: sa.Engine) -> None:
    """Another kind of due work, done one per transaction: ann's reward can not lapse; bob's
    does, and bob's later posting posts while ann's waits."""
    app = new_app(engine, DELAYED)
    for name in ("ann", "bob"):
        app.enroll({"member": name}, START)
        app.place_order(burritos(f"{name}-1", name, qty=5), START)  # 500 points
    posted = START + DELAY
    assert due.run_due(app.uow, posted, WALL) == 2
    for name in ("ann", "bob"):
        app.redeem({"member": name, "reward": "five-off", "as": f"{name}-5"}, posted)
    _refuse(engine, "rewards", "OLD.alias = 'ann-5'")
    lapsed = START + timedelta(days=61)  # five-off is valid 60 days
    assert due.run_due(app.uow, lapsed, WALL) == 1
    with engine.connect() as conn:
        aside = conn.execute(sa.select(due_failures.c.member_id, due_failures.c.kind)).all()
        states = conn.execute(sa.select(rewards.c.alias, rewards.c.state)).all()
    assert [tuple(r) for r in aside] == [(_id(engine, members, "ann"), "reward")]
    assert {alias: state for alias, state in states} == {"ann-5": "available", "bob-5": "expired"}
    lapse = (posted + timedelta(days=60)).astimezone(UTC)
    [listed] = _audit(engine)
    assert listed.startswith(
        f"lapse of reward 'ann-5' of member 'ann' in environment {app.env_id}, due at"
        f" {lapse.isoformat()}: failed 1x"
    )
    app.place_order(burritos("ann-2", "ann"), lapsed)
    app.place_order(burritos("bob-2", "bob"), lapsed)
    lapsed += DELAY  # ann-2 and bob-2 are due
    assert due.run_due(app.uow, lapsed, WALL + timedelta(seconds=1)) == 1
    assert {k: v for k, v in _post_states(engine).items() if k.endswith("-2")} == {
        "ann-2": "pending",
        "bob-2": "posted",
    }
    _allow(engine, "rewards")
    assert due.run_due(app.uow, lapsed, WALL + timedelta(seconds=10)) == 2
    assert set(_post_states(engine).values()) == {"posted"}
    assert _audit(engine) == []


def test_an_order_id_of_200_characters_posts_and_is_clawed_back(engine: sa.Engine) -> None:
    """It posts as it closes (the demo program has no accrual delay): in the request."""
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    long_id = "o" * 200
    app.place_order(burritos(long_id, "ann", qty=2), START)
    assert _post_states(engine) == {long_id: "posted"}
    assert due.run_due(app.uow, NOW, WALL) == 0
    assert app.member("ann", NOW).posted == 200
    app.refund_order({"order": long_id, "all": True}, NOW)  # the clawback's reference too
    assert app.member("ann", NOW).posted == 0
    assert _set_aside(engine) == []
    assert [f.check for f in run_audit(engine, NOW) if not f.ok] == []


def test_a_version_that_can_not_go_live_holds_back_what_comes_after_it(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Going live re-plans every member, so everything due from its time on waits for it;
    what was due before it goes on."""
    monkeypatch.setattr(due, "GROUP_BUDGET_S", 60.0)
    app = _six_members_with_a_posting_each(engine)
    switch = START + DELAY + timedelta(seconds=3)
    with app.uow() as uow:
        programs.publish(uow, DELAYED, START, live_from=switch)
        uow.commit()
    _refuse(engine, "program_versions", "OLD.version = 2")
    assert due.run_due(app.uow, NOW, WALL) == 3
    assert _post_states(engine) == {
        "o0": "posted",
        "o1": "posted",
        "o2": "posted",
        "o3": "pending",
        "o4": "pending",
        "o5": "pending",
    }
    assert _audit(engine) == [
        f"version 2 going live in environment {app.env_id}, due at"
        f" {switch.astimezone(UTC).isoformat()}: failed 1x since {WALL.isoformat()}"
        f" ({_refused(engine)}), next try at {(WALL + timedelta(seconds=10)).isoformat()}"
    ]
    _allow(engine, "program_versions")
    assert due.run_due(app.uow, NOW, WALL + timedelta(seconds=10)) == 1 + 3
    assert set(_post_states(engine).values()) == {"posted"}
    assert _set_aside(engine) == []


def test_a_hold_that_can_not_be_released_holds_back_only_itself(engine: sa.Engine) -> None:
    app = new_app(engine, DELAYED)
    app.issue_gift_card("g1", {"amount": "50.00"}, START)
    for hold in ("h1", "h2"):
        app.authorize_gift_card("g1", {"amount": "10.00", "hold": hold}, START)
    app.enroll({"member": "ann"}, START)
    week = START + timedelta(days=8)
    app.place_order(burritos("o1", "ann"), week - DELAY)  # due after the holds' release
    _refuse(engine, "holds", "OLD.external_id = 'h1'")
    assert due.run_due(app.uow, week, WALL) == 2  # h2 released, o1 posted
    with engine.connect() as conn:
        states = conn.execute(sa.select(holds.c.external_id, holds.c.state)).all()
    assert {hold: state for hold, state in states} == {"h1": "pending", "h2": "released"}
    assert app.gift_card("g1").balance == 4000
    assert _post_states(engine) == {"o1": "posted"}
    [listed] = _audit(engine)
    assert listed.startswith(f"release of hold 'h1' in environment {app.env_id}, due at")
    _allow(engine, "holds")
    assert due.run_due(app.uow, week, WALL + timedelta(seconds=10)) == 1
    assert app.gift_card("g1").balance == 5000
    assert _audit(engine) == []
