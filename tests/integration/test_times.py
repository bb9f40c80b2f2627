"""The program version and the tier in force at an order's time, each found in one query:
the latest by that time, or (an order dated before the first version, or before the member
enrolled) the first one."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from punchcard.services import orders
from punchcard.store.database import open_database
from punchcard.store.tables import members

from ..conftest import EXAMPLE_PROGRAM
from .helpers import START, burritos, new_app

DAY = timedelta(days=1)


def test_an_order_takes_the_version_and_tier_in_force_at_its_time(engine: sa.Engine) -> None:
    app = new_app(engine)  # version 1, live from START
    app.enroll({"member": "ann"}, START + DAY)
    # 150 dollars of burritos, posted at once: 1,500 points lift Ann to gold.
    app.place_order(burritos("big", "ann", qty=15), START + 2 * DAY)
    app.run_due(START + 2 * DAY)
    app.publish(EXAMPLE_PROGRAM.read_text(), START + 10 * DAY)  # version 2
    now = START + 12 * DAY
    dated = {
        "before-v1-and-enrolment": START - 3 * DAY,
        "before-gold": START + 1 * DAY + timedelta(hours=1),
        "gold-v1": START + 5 * DAY,
        "gold-v2": START + 11 * DAY,
    }
    for order_id, at in dated.items():
        app.place_order({**burritos(order_id, "ann"), "at": at.isoformat()}, now)

    def seen(order_id: str) -> tuple[int, str]:
        view = app._read(lambda uow: orders.view(uow, order_id))
        return view["program_version"], view["tier_at_placement"]

    assert seen("before-v1-and-enrolment") == (1, "member")
    assert seen("before-gold") == (1, "member")
    assert seen("gold-v1") == (1, "gold")
    assert seen("gold-v2") == (2, "gold")


def test_a_publish_plans_inactivity_expiry_from_each_members_last_activity(
    engine: sa.Engine,
) -> None:
    """Publishing a version with `inactivity_days` re-plans every member who has been
    active, from that member's own last activity; a version without it clears the plan."""
    app = new_app(engine)
    for member, at in (("ann", START), ("bob", START + timedelta(days=2))):
        app.enroll({"member": member}, at)
        app.place_order(burritos(f"o-{member}", member, qty=1), at)
        app.run_due(at)
    app.enroll({"member": "cy"}, START)  # never active
    later = START + timedelta(days=3)
    idle = EXAMPLE_PROGRAM.read_text().replace(
        "expiry: {months_after_earn: 12}", "expiry: {inactivity_days: 45}"
    )

    def planned() -> dict[str, object]:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(members.c.external_id, members.c.inactivity_due_at).where(
                    members.c.env_id == app.env_id
                )
            ).all()
        return dict(rows)  # type: ignore[arg-type]

    app.publish(idle, later)
    assert planned() == {
        "ann": START + timedelta(days=45),
        "bob": START + timedelta(days=47),
        "cy": None,
    }
    app.publish(EXAMPLE_PROGRAM.read_text(), later)
    assert planned() == {"ann": None, "bob": None, "cy": None}


@pytest.mark.postgres
def test_the_inactivity_plan_counts_24_hour_days_whatever_the_sessions_time_zone(
    postgres_url: str,
) -> None:
    """A day is 24 hours in Punchcard. PostgreSQL's interval days follow the session's time
    zone, which would move the plan by an hour across a daylight saving change (New York
    moves its clocks on 8 March 2026, between the activity and the deadline)."""
    engine = open_database(postgres_url + "?options=-c%20TimeZone%3DAmerica%2FNew_York")
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=1), START)
    app.run_due(START)
    idle = EXAMPLE_PROGRAM.read_text().replace(
        "expiry: {months_after_earn: 12}", "expiry: {inactivity_days: 45}"
    )
    app.publish(idle, START + timedelta(days=1))
    with engine.connect() as conn:
        due = conn.execute(
            sa.select(members.c.inactivity_due_at).where(members.c.env_id == app.env_id)
        ).scalar_one()
    assert due == START + timedelta(hours=45 * 24)
    engine.dispose()
