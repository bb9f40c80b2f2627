"""Balance inquiry limits, kept in the database so that every server process shares them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from punchcard.services.limits import InquiryLimiter
from punchcard.services.tenants import create_tenant

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _keys(engine: sa.Engine) -> tuple[tuple[str, str], tuple[str, str]]:
    """(key id, environment) of a tenant's live and sandbox admin keys."""
    made = create_tenant(engine, "Limits", T0)

    def key_id(key: str) -> str:
        return "_".join(key.split("_", 3)[:3])

    return (
        (key_id(made["live_key"]), made["live_environment"]),
        (key_id(made["sandbox_key"]), made["sandbox_environment"]),
    )


def test_a_key_gets_a_minutes_burst_then_one_per_interval(engine: sa.Engine) -> None:
    (live, live_env), (sandbox, sandbox_env) = _keys(engine)
    limiter = InquiryLimiter(30)  # a burst of 30, then one every 2 s

    def take(at: datetime, key: str = live, env: str = live_env) -> float:
        return limiter.take(engine, key, env, at)

    assert [take(T0) for _ in range(30)] == [0.0] * 30
    assert take(T0) == 2.0
    assert take(T0 + timedelta(seconds=1, microseconds=999_999)) == 0.000001
    assert take(T0 + timedelta(seconds=2)) == 0.0
    assert take(T0 + timedelta(seconds=2)) == 2.0
    assert take(T0, sandbox, sandbox_env) == 0.0  # another key has its own allowance
    # A long idle spell gives back one minute's burst, no more.
    later = T0 + timedelta(hours=5)
    assert [take(later) for _ in range(31)] == [0.0] * 30 + [2.0]


def test_by_default_the_database_clock_judges(engine: sa.Engine) -> None:
    """Without `at`, now is the database's: a burst of 30 at once, then 2 s to wait (less the
    moments the burst took)."""
    (live, live_env), _ = _keys(engine)
    limiter = InquiryLimiter(30)
    assert [limiter.take(engine, live, live_env) for _ in range(30)] == [0.0] * 30
    assert 1.0 < limiter.take(engine, live, live_env) <= 2.0


def test_concurrent_takers_share_one_allowance(engine: sa.Engine) -> None:
    """Eight threads, each with its own connection, race for one key's 30 inquiries."""
    (live, live_env), _ = _keys(engine)
    limiter = InquiryLimiter(30)

    def ten(_: int) -> list[float]:
        return [limiter.take(engine, live, live_env, T0) for _ in range(10)]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(ten, range(8)) for a in batch]
    assert answers.count(0.0) == 30
    assert sorted(set(answers) - {0.0}) == [2.0]
