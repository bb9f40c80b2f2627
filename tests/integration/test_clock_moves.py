"""A sandbox clock never moves back, even when two moves were checked against the same time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from punchcard.errors import InvalidInput
from punchcard.services.clock import SystemClock
from punchcard.services.tenants import create_tenant
from punchcard.store.tables import environments
from punchcard.worker.due_work import SandboxBusy, claim, move_clock, sandbox_lease

from .helpers import FakeClock

T0 = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def test_a_move_checked_before_a_later_move_finished_does_not_take_the_clock_back(
    engine: sa.Engine,
) -> None:
    sandbox = create_tenant(engine, "Clocks", T0)["sandbox_environment"]
    with engine.begin() as conn:
        conn.execute(sa.update(environments).where(environments.c.id == sandbox).values(clock=T0))

    def clock() -> datetime:
        with engine.connect() as conn:
            found: datetime = conn.execute(
                sa.select(environments.c.clock).where(environments.c.id == sandbox)
            ).scalar_one()
        return found

    # Both requests saw T0 and planned their moves; the day-long one ran first.
    move_clock(engine, sandbox, T0 + timedelta(days=1), SystemClock())
    with pytest.raises(InvalidInput, match="the clock never moves back"):
        move_clock(engine, sandbox, T0 + timedelta(hours=2), SystemClock())
    assert clock() == T0 + timedelta(days=1)
    move_clock(engine, sandbox, T0 + timedelta(days=1), SystemClock())  # a retry: no move
    assert clock() == T0 + timedelta(days=1)


def test_a_long_move_keeps_the_sandbox_past_its_lease(engine: sa.Engine) -> None:
    """A move doing years of due work outlives the 30 s lease: renewed while it runs, the
    sandbox is neither another move's nor a worker's meanwhile (both took it before)."""
    sandbox = create_tenant(engine, "Clocks", T0)["sandbox_environment"]
    clock = FakeClock(T0)
    with sandbox_lease(engine, sandbox, clock, renew_s=0.05):
        clock.at = T0 + timedelta(seconds=31)  # still running 31 s on
        time.sleep(0.5)  # several renewals
        assert claim(engine, "worker-x", clock.now(), sandbox) == []
        with pytest.raises(SandboxBusy), sandbox_lease(engine, sandbox, clock, wait_s=0.1):
            pass
    assert claim(engine, "worker-x", clock.now(), sandbox) == [sandbox]  # released at the end
