"""A sandbox clock never moves back, even when two moves were checked against the same time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from punchcard.errors import InvalidInput
from punchcard.services.clock import SystemClock
from punchcard.services.tenants import authenticate, create_sandbox, create_tenant
from punchcard.store.tables import environments
from punchcard.worker.due_work import SandboxBusy, claim, move_clock, process, sandbox_lease

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


def test_sandboxes_whose_clocks_stand_in_the_past_do_not_starve_live(engine: sa.Engine) -> None:
    """27 sandboxes at March's clock and one live environment, 20 claimed a round: each is
    done at least every second round. Claimed by how far each got in its own time, the
    sandboxes always came first and live was never done again after its first round."""
    made = create_tenant(engine, "Fair", T0)
    with engine.begin() as conn:
        owner = authenticate(conn, made["live_key"])
        assert owner is not None
        for n in range(26):
            create_sandbox(conn, owner, f"s{n}", T0, T0)
    live = made["live_environment"]
    clock = FakeClock(datetime(2026, 11, 26, tzinfo=UTC))
    rounds: list[list[str]] = []
    for _ in range(6):
        claimed = claim(engine, "worker-x", clock.now())
        for env_id in claimed:
            process(engine, env_id, clock, "worker-x")
        rounds.append(claimed)
        clock.at += timedelta(seconds=1)
    assert [len(r) for r in rounds] == [20] * 6
    assert all(live in rounds[i] or live in rounds[i + 1] for i in range(5))
