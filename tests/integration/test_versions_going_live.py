"""A version changes member-level rules (tier windows, inactivity deadlines) when it goes
live, not when it is uploaded: at once when live from now, as due work when live later."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from punchcard.services import due, programs, tenants
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import members, outbox, program_versions

from .helpers import burritos, new_app

DEMO = open("src/punchcard/demo/burrito-rewards.yaml").read()  # noqa: SIM115 - read once
THIRTY = DEMO.replace("expiry: {months_after_earn: 12}", "expiry: {inactivity_days: 30}")
CHICAGO = timezone(timedelta(hours=-6))
JUNE = datetime(2026, 6, 1, 12, tzinfo=CHICAGO)


@pytest.fixture
def make(engine: sa.Engine) -> Callable[..., Loyalty]:
    return lambda program=DEMO, start=JUNE: new_app(engine, program, start=start)


def _upload(app: Loyalty, source: str, now: datetime, live_from: datetime | None) -> None:
    app._write(lambda uow: programs.publish(uow, source, now, live_from=live_from))


def _buy(app: Loyalty, order: str, member: str, dollars: int, at: datetime) -> None:
    app.place_order(burritos(order, member, qty=dollars // 10), at)
    app.run_due(at)


def test_a_version_live_from_next_june_leaves_this_new_year_roll_alone(
    make: Callable[..., Loyalty],
) -> None:
    """900 in 2026; on 5 January 2027 another 200 is 2027's, not a 1,100 that makes gold."""
    app = make()
    app.enroll({"member": "bob"}, JUNE)
    _buy(app, "o1", "bob", 90, JUNE)
    _upload(app, DEMO.replace("name: Burrito Rewards", "name: Burrito"), JUNE,
            datetime(2027, 6, 1, tzinfo=CHICAGO))  # fmt: skip
    later = datetime(2027, 1, 5, 12, tzinfo=CHICAGO)
    _buy(app, "o2", "bob", 20, later)
    bob = app.member("bob", later)
    assert (bob.tier, bob.visits) == ("member", 1)


def test_a_new_time_zone_after_new_year_does_not_roll_the_year_again(
    make: Callable[..., Loyalty],
) -> None:
    """Gold from 2026 holds through 2027: Tokyo's New Year rolled it; a Chicago version
    published hours later (still 2026 in Chicago) does not roll it a second time."""
    tokyo = DEMO.replace("timezone: America/Chicago", "timezone: Asia/Tokyo")
    app = make(tokyo)
    app.enroll({"member": "max"}, JUNE)
    _buy(app, "o1", "max", 120, JUNE)  # 1,200: gold
    new_year = datetime(2027, 1, 1, 2, tzinfo=timezone(timedelta(hours=9)))
    app.run_due(new_year)
    app.publish(DEMO, new_year)
    later = datetime(2027, 1, 2, 12, tzinfo=CHICAGO)
    app.run_due(later)
    assert app.member("max", later).tier == "gold"


@pytest.mark.parametrize("live_from", [None, datetime(2026, 12, 1, tzinfo=CHICAGO)])
def test_inactivity_follows_the_version_live_not_one_uploaded(
    make: Callable[..., Loyalty], live_from: datetime | None
) -> None:
    """Live: 30 days of inactivity. A version with 365 days, never activated or live only
    from December, leaves cat's 100 to expire on day 30."""
    app = make(THIRTY)
    app.enroll({"member": "cat"}, JUNE)
    _buy(app, "o1", "cat", 10, JUNE)
    _upload(app, THIRTY.replace("inactivity_days: 30", "inactivity_days: 365"), JUNE, live_from)
    later = JUNE + timedelta(days=61)
    app.run_due(later)
    assert app.member("cat", later).posted == 0


def test_a_version_activated_for_later_starts_calendar_windows_when_live(
    make: Callable[..., Loyalty], engine: sa.Engine
) -> None:
    """Lifetime until 1 July, a calendar year from then: eve's 900 are 2026's, and 2027's
    200 do not make her gold."""
    lifetime = DEMO.replace("window: calendar_year", "window: lifetime")
    app = make(lifetime)
    app.enroll({"member": "eve"}, JUNE)
    _buy(app, "o1", "eve", 90, JUNE)
    _upload(app, DEMO, JUNE, None)
    july = datetime(2026, 7, 1, tzinfo=CHICAGO)
    app._write(lambda uow: programs.activate(uow, 2, july, JUNE))
    later = datetime(2027, 1, 5, 12, tzinfo=CHICAGO)
    _buy(app, "o2", "eve", 20, later)
    eve = app.member("eve", later)
    assert (eve.tier, eve.visits) == ("member", 1)
    with engine.connect() as conn:
        changed = conn.execute(
            sa.select(sa.func.count()).where(outbox.c.type == "tier.changed")
        ).scalar_one()
    assert changed == 0


def test_a_time_zone_already_past_new_year_rolls_the_old_year_as_it_goes_live(
    make: Callable[..., Loyalty],
) -> None:
    """Chicago to Tokyo at 20:00 on 31 December (2027 in Tokyo): bob's 2026 window rolls as
    the version goes live, so January's 200 are 2027's, not a 1,100 that makes gold."""
    app = make()
    app.enroll({"member": "bob"}, JUNE)
    _buy(app, "o1", "bob", 90, JUNE)
    app.publish(DEMO.replace("timezone: America/Chicago", "timezone: Asia/Tokyo"),
                datetime(2026, 12, 31, 20, tzinfo=CHICAGO))  # fmt: skip
    later = datetime(2027, 1, 5, 12, tzinfo=CHICAGO)
    _buy(app, "o2", "bob", 20, later)
    bob = app.member("bob", later)
    assert (bob.tier, bob.visits) == ("member", 1)


def test_a_sandbox_keeps_a_copied_version_for_later_until_its_clock_gets_there(
    engine: sa.Engine,
) -> None:
    """Live runs a lifetime program at 10 points a dollar, and has a calendar-year one at 20
    activated for 1 July. A sandbox started on 1 June runs the first until its clock reaches
    July, then goes live with the second: eve's June 900 stay 900, are 2026's, and January's
    $20 (400) do not make her gold."""
    lifetime = DEMO.replace("window: calendar_year", "window: lifetime")
    made = tenants.create_tenant(engine, "Copies", JUNE)
    live = Loyalty(engine, made["live_environment"])
    live.publish(lifetime, JUNE)
    july = datetime(2026, 7, 1, tzinfo=CHICAGO)
    _upload(live, DEMO.replace("points_per_unit: 10", "points_per_unit: 20"), JUNE, july)
    with engine.begin() as conn:
        caller = tenants.authenticate(conn, made["live_key"])
        assert caller is not None
        sandbox = tenants.create_sandbox(conn, caller, "later", JUNE, JUNE)
        copied = conn.execute(
            sa.select(program_versions.c.version, program_versions.c.live_from,
                      program_versions.c.planned)
            .where(program_versions.c.env_id == sandbox["id"])
            .order_by(program_versions.c.version)
        ).all()  # fmt: skip
    assert [tuple(row) for row in copied] == [(1, JUNE, True), (2, july, False)]
    app = Loyalty(engine, sandbox["id"])
    app.enroll({"member": "eve"}, JUNE)
    _buy(app, "o1", "eve", 90, JUNE)
    assert app.member("eve", JUNE).posted == 900
    later = datetime(2027, 1, 5, 12, tzinfo=CHICAGO)
    _buy(app, "o2", "eve", 20, later)
    eve = app.member("eve", later)
    assert (eve.posted, eve.tier, eve.visits) == (1300, "member", 1)


def test_two_versions_for_one_instant_each_take_over_in_number_order(
    make: Callable[..., Loyalty],
) -> None:
    """Two visits versions (a fix of the first) both for 1 July, after a points version: the
    first takes over from the points version and counts bob's 900 points as 1 visit; each
    took the other as the version before, and 900 'visits' stayed (platinum at 10)."""
    visits = (
        DEMO.replace("metric: points", "metric: visits")
        .replace("threshold: 1000", "threshold: 5")
        .replace("threshold: 2500", "threshold: 10")
    )
    app = make()
    app.enroll({"member": "bob"}, JUNE)
    _buy(app, "o1", "bob", 90, JUNE)
    july = datetime(2026, 7, 1, tzinfo=CHICAGO)
    _upload(app, visits, JUNE, july)
    _upload(app, visits.replace("name: Burrito Rewards", "name: Burrito"), JUNE, july)
    later = july + timedelta(hours=1)
    _buy(app, "o2", "bob", 10, later)
    bob = app.member("bob", later)
    assert (bob.tier, bob.visits) == ("member", 2)
    with app.engine.connect() as conn:
        assert conn.execute(sa.select(members.c.progress)).scalar_one() == 2


def test_a_version_that_plans_members_alike_leaves_their_plans_alone(
    make: Callable[..., Loyalty], engine: sa.Engine
) -> None:
    """A new name, a promotion more, a higher gold threshold: nobody is re-planned. With the
    worker behind on New Year, fay's window still rolls at New Year, not when the version
    went live (a re-plan would have moved the roll to then); her inactivity deadline stays."""
    app = make(THIRTY)
    app.enroll({"member": "fay"}, JUNE)
    _buy(app, "o1", "fay", 90, JUNE)
    fay = sa.and_(members.c.env_id == app.env_id, members.c.external_id == "fay")
    plan = (members.c.window_start, members.c.window_end, members.c.inactivity_due_at)
    with engine.connect() as conn:
        planned = conn.execute(sa.select(*plan).where(fay)).one()
    new_year = datetime(2027, 1, 1, tzinfo=ZoneInfo("America/Chicago"))
    assert (planned.window_end, planned.inactivity_due_at) == (new_year, JUNE + timedelta(days=30))
    alike = THIRTY.replace("name: Burrito Rewards", "name: Burritos").replace(
        "threshold: 1000", "threshold: 1200"
    )
    assert alike.count("threshold: 1200") == 1
    app.publish(alike, datetime(2027, 1, 5, 12, tzinfo=CHICAGO))
    with engine.connect() as conn:
        assert conn.execute(sa.select(*plan).where(fay)).one() == planned
        assert conn.execute(
            sa.select(program_versions.c.version, program_versions.c.planned).order_by(
                program_versions.c.version
            )
        ).all() == [(1, True), (2, True)]


def _v3_published_before_v2_is_applied(
    make: Callable[..., Loyalty],
) -> tuple[Loyalty, datetime]:
    """cat's 1,000 points from JUNE under 30 days of inactivity (v1); v2 (60 days) activated
    for the next day; a minute after that, before the worker gets there, v3 (30 days)
    published live from now. Returns when v3 went live."""
    app = make(THIRTY)
    app.enroll({"member": "cat"}, JUNE)
    _buy(app, "o1", "cat", 100, JUNE)
    tomorrow = JUNE + timedelta(days=1)
    _upload(app, THIRTY.replace("inactivity_days: 30", "inactivity_days: 60"), JUNE, tomorrow)
    v3_at = tomorrow + timedelta(minutes=1)
    app.publish(THIRTY.replace("name: Burrito Rewards", "name: B3"), v3_at)
    return app, v3_at


def test_a_version_applied_late_is_followed_by_the_versions_after_it_again(
    make: Callable[..., Loyalty], engine: sa.Engine
) -> None:
    """30 days of inactivity; v2 (60 days) activated for tomorrow; a minute after that,
    with the worker not there yet, v3 (30 days) is published live from now. The worker
    then applies v2 after v3, and so applies v3 again after it: cat ends on v3's 30 days,
    the version live. v4, alike v3, then re-plans no one, and her 1,000 expire on day 30."""
    app, v3_at = _v3_published_before_v2_is_applied(make)
    app.run_due(v3_at)
    cat = sa.and_(members.c.env_id == app.env_id, members.c.external_id == "cat")
    deadline = sa.select(members.c.inactivity_due_at).where(cat)
    with engine.connect() as conn:
        assert conn.execute(deadline).scalar_one() == JUNE + timedelta(days=30)
    app.publish(THIRTY.replace("name: Burrito Rewards", "name: B4"), v3_at + timedelta(days=1))
    with engine.connect() as conn:
        assert conn.execute(deadline).scalar_one() == JUNE + timedelta(days=30)
        applied = conn.execute(
            sa.select(program_versions.c.version, program_versions.c.applied_seq).order_by(
                program_versions.c.version
            )
        ).all()
    assert applied == [(1, 1), (2, 3), (3, 4), (4, 5)]  # v3 applied at 2, and again at 4
    later = JUNE + timedelta(days=45)
    app.run_due(later)
    assert app.member("cat", later).posted == 0


def test_the_first_version_live_after_migration_0010_re_plans_everyone(
    make: Callable[..., Loyalty], engine: sa.Engine
) -> None:
    """Before 0009 an upload re-planned members even if never activated, so a database
    upgraded through 0010 (no applied order kept) may hold a plan no live version made:
    here 365 days of inactivity under a live 30. The next version, alike the live one,
    re-plans it."""
    app = make(THIRTY)
    app.enroll({"member": "cat"}, JUNE)
    _buy(app, "o1", "cat", 100, JUNE)
    cat = sa.and_(members.c.env_id == app.env_id, members.c.external_id == "cat")
    with engine.begin() as conn:  # as an upgraded database stands
        conn.execute(
            sa.update(members).where(cat).values(inactivity_due_at=JUNE + timedelta(days=365))
        )
        conn.execute(sa.update(program_versions).values(applied_seq=None))
    app.publish(THIRTY.replace("name: Burrito Rewards", "name: B2"), JUNE + timedelta(days=1))
    with engine.connect() as conn:
        due = conn.execute(sa.select(members.c.inactivity_due_at).where(cat)).scalar_one()
    assert due == JUNE + timedelta(days=30)


def test_a_version_applied_late_leaves_progress_in_the_live_versions_metric(
    make: Callable[..., Loyalty], engine: sa.Engine
) -> None:
    """Points; v2 (visits) activated for tomorrow is applied after v3 (points), published
    live from now: v2 counts cat's progress in visits (1), and v3, applied again after it,
    counts it in points again (1,200), so her next order adds its 1,250 to the points."""
    app = make()
    app.enroll({"member": "cat"}, JUNE)
    _buy(app, "o1", "cat", 120, JUNE)  # 1,200 points: gold
    tomorrow = JUNE + timedelta(days=1)
    _upload(app, DEMO.replace("metric: points", "metric: visits"), JUNE, tomorrow)
    v3_at = tomorrow + timedelta(minutes=1)
    app.publish(DEMO.replace("name: Burrito Rewards", "name: B3"), v3_at)
    app.run_due(v3_at)
    cat = sa.and_(members.c.env_id == app.env_id, members.c.external_id == "cat")
    progress = sa.select(members.c.progress).where(cat)
    with engine.connect() as conn:
        assert conn.execute(progress).scalar_one() == 1200
    _buy(app, "o2", "cat", 100, v3_at + timedelta(hours=1))  # 1,000 points, x1.25 for gold
    with engine.connect() as conn:
        assert conn.execute(progress).scalar_one() == 1200 + 1250


def test_a_version_published_while_a_late_one_is_being_applied_re_plans(
    make: Callable[..., Loyalty], engine: sa.Engine
) -> None:
    """The worker has applied v2 (60 days, live from tomorrow) after v3 (30 days, published
    live from now), and not yet v3 again, when v4, alike v3, is published: the members hold
    v2's plan, not v3's, so v4 re-plans them to its 30 days."""
    app, v3_at = _v3_published_before_v2_is_applied(make)
    with engine.connect() as conn:
        v2 = conn.execute(
            sa.select(program_versions.c.id).where(program_versions.c.version == 2)
        ).scalar_one()
    app._write(
        lambda uow: due._go_live(uow, v2, JUNE + timedelta(days=1))
    )  # the worker's first step
    cat = sa.and_(members.c.env_id == app.env_id, members.c.external_id == "cat")
    deadline = sa.select(members.c.inactivity_due_at).where(cat)
    with engine.connect() as conn:
        assert conn.execute(deadline).scalar_one() == JUNE + timedelta(days=60)
    app.publish(THIRTY.replace("name: Burrito Rewards", "name: B4"), v3_at + timedelta(hours=1))
    with engine.connect() as conn:
        assert conn.execute(deadline).scalar_one() == JUNE + timedelta(days=30)
