"""Waiting for webhook cursors in tests: what a sender may read on PostgreSQL."""

from __future__ import annotations

import time

import sqlalchemy as sa

from punchcard.worker.delivery import Deliverer

_BEHIND = sa.text(
    "SELECT coalesce(max(tx), 0) >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    " FROM outbox"
)


def settle(engine: sa.Engine, timeout_s: float = 10) -> None:
    """Wait until a sender can read every committed event: on PostgreSQL it reads only those
    older than every transaction still running in the cluster (other tests' too); on SQLite,
    whose writers take turns, every committed one at once."""
    if engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + timeout_s
    with engine.connect() as conn:
        while conn.execute(_BEHIND).scalar() and time.monotonic() < deadline:
            conn.rollback()
            time.sleep(0.005)


def run(deliverer: Deliverer) -> int:
    """One round of `deliverer`, once every event committed so far can be read."""
    settle(deliverer.engine)
    return deliverer.run_once()
