"""Balance inquiries per API key, limited across every server process.

The generic cell rate algorithm keeps one number per key: the time its next inquiry is
due if it kept to the steady rate. An inquiry is allowed when that time, less the burst
the limit grants (a whole minute's worth), is not in the future; allowing it moves the
time on by one interval. Checking and moving are one `INSERT ... ON CONFLICT DO UPDATE
... WHERE`, so two processes can never both take the last inquiry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from punchcard.store.database import single_statement
from punchcard.store.tables import inquiry_limits

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(at: datetime) -> int:
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@lru_cache(maxsize=2)
def _take_statement(dialect_name: str) -> Any:
    """Built once per dialect: allowed inquiries return the new time; refused ones no row."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    insert = dialect.insert(inquiry_limits)
    stored = inquiry_limits.c.next_at_us
    now = sa.bindparam("now", type_=sa.BigInteger)
    due = sa.case((stored > now, stored), else_=now)  # not before now: idle time is no credit
    return (
        insert.values(
            key_id=sa.bindparam("key_id"),
            env_id=sa.bindparam("env_id"),
            next_at_us=now + sa.bindparam("interval", type_=sa.BigInteger),
        )
        .on_conflict_do_update(
            index_elements=[inquiry_limits.c.key_id],
            set_={"next_at_us": due + sa.bindparam("interval", type_=sa.BigInteger)},
            where=due + sa.bindparam("interval", type_=sa.BigInteger) - now
            <= sa.bindparam("window", type_=sa.BigInteger),
        )
        .returning(stored)
    )


_DB_NOW_US = {  # the database's clock, as microseconds since the epoch
    "postgresql": sa.text("SELECT CAST(extract(epoch FROM clock_timestamp()) * 1000000 AS bigint)"),
    "sqlite": sa.text("SELECT CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"),
}

_NEXT_AT = sa.select(inquiry_limits.c.next_at_us).where(
    inquiry_limits.c.key_id == sa.bindparam("key_id")
)


class InquiryLimiter:
    """`per_minute` inquiries per key: a burst of that many, then one per 60/per_minute s."""

    def __init__(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("inquiries per minute must be at least 1")
        self.interval_us = 60_000_000 // per_minute
        self.window_us = self.interval_us * per_minute

    def take(
        self, engine: sa.Engine, key_id: str, env_id: str, at: datetime | None = None
    ) -> float:
        """0 when allowed (and counted), else the seconds until the next one would be.

        Judged by the database's clock unless `at` is given (tests): one clock for every
        server process, so a server whose clock runs fast can not lock a key out for all."""
        with single_statement(engine, write=True) as conn:
            now_us = (
                epoch_us(at)
                if at is not None
                else int(conn.execute(_DB_NOW_US[conn.dialect.name]).scalar_one())
            )
            return self._take(conn, key_id, env_id, now_us)

    def _take(self, conn: sa.Connection, key_id: str, env_id: str, now_us: int) -> float:
        values = {
            "key_id": key_id,
            "env_id": env_id,
            "now": now_us,
            "interval": self.interval_us,
            "window": self.window_us,
        }
        if conn.execute(_take_statement(conn.dialect.name), values).first() is not None:
            return 0.0
        next_at: int = conn.execute(_NEXT_AT, {"key_id": key_id}).scalar_one()
        return max(next_at + self.interval_us - self.window_us - now_us, 1) / 1_000_000
