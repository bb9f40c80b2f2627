"""Time, injected: the system clock for live, a movable clock for sandboxes.

This module holds the only wall-clock read in Punchcard (`SystemClock`); everything
else is handed a `Clock` or a `now`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa

from punchcard.errors import NotFound
from punchcard.store.tables import environments


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def environment_now(conn: sa.Connection, env_id: str, clock: Clock) -> datetime:
    """A sandbox's own clock when it has one, otherwise the system clock."""
    found = conn.execute(
        sa.select(environments.c.clock, environments.c.deleted_at).where(
            environments.c.id == env_id
        )
    ).first()
    if found is None or found.deleted_at is not None:
        raise NotFound("no such environment")
    return found.clock if found.clock is not None else clock.now()
