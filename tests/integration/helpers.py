"""Small builders shared by the integration tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from punchcard.services import inbound
from punchcard.services.loyalty import Loyalty
from punchcard.services.programs import create_environment

from ..conftest import EXAMPLE_PROGRAM

CHICAGO_WINTER = timezone(timedelta(hours=-6))
START = datetime(2026, 3, 3, 9, 0, tzinfo=CHICAGO_WINTER)


class FakeClock:
    """A clock a test sets by hand (`clock.at = ...`)."""

    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


def new_app(engine: sa.Engine, program: str | None = None, start: datetime = START) -> Loyalty:
    app = Loyalty(engine, create_environment(engine, "test", start, clock=start))
    app.publish(program or EXAMPLE_PROGRAM.read_text(), start)
    return app


def burritos(order_id: str, member: str, qty: int = 1, **extra: object) -> dict[str, object]:
    return {
        "id": order_id,
        "member": member,
        "lines": [
            {"id": "l1", "sku": "BURR", "category": "burrito", "qty": qty, "unit_price": "10.00"}
        ],
        **extra,
    }


_EXPIRING = """
program: expiring
name: Expiring
currency: USD
timezone: America/Chicago
earn: {points_per_unit: 10, accrual_delay: ACCRUAL}
expiry: EXPIRY
rewards:
  - {id: five-off, cost: 200, valid_days: 30, discount: {amount_off: "5.00"}}
"""


def expiring(expiry: str, accrual: str = "PT0S") -> str:
    """A program whose points expire as `expiry` says, with a 200-point reward to spend."""
    return _EXPIRING.replace("EXPIRY", expiry).replace("ACCRUAL", accrual)


def delayed(accrual: str = "PT1M", program: str | None = None) -> str:
    """The demo program (or `program`, which has the demo's `accrual_delay: PT0S`) posting
    `accrual` after the close. For tests of the worker's posting: with no delay an order is
    posted as it closes, and the worker has none of its posting to do."""
    source = program or EXAMPLE_PROGRAM.read_text()
    assert source.count("accrual_delay: PT0S") == 1
    return source.replace("accrual_delay: PT0S", f"accrual_delay: {accrual}")


def send_inbound(engine: sa.Engine, env_id: str, body: bytes, now: datetime) -> bool:
    """Receive `body` at a new generic inbound source of the environment, signed as its
    platform would sign it; True when it was new."""
    with engine.begin() as conn:
        source = inbound.create_source(conn, env_id, "generic", now)
    stamp = str(int(now.timestamp()))
    signed = {
        "x-punchcard-timestamp": stamp,
        "x-punchcard-signature": inbound.signature(source["secret"], stamp, body),
    }
    return inbound.receive(engine, source["id"], body, signed, now)
