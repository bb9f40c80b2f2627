"""On PostgreSQL the request path runs on psycopg (store/hot.py): prepared statements, and the
writes nothing reads sent together, in pipeline mode, with the next statement that answers or
with the COMMIT. libpq's own trace of the connection counts what went over the wire."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg.pq import Trace

from punchcard.store import hot
from punchcard.store.database import open_database
from punchcard.store.tables import members

from .helpers import START, burritos, new_app


class Wire:
    """The messages the client sent, grouped into round trips: a round trip starts each time
    the client sends after the server has answered."""

    def __init__(self, engine: sa.Engine) -> None:
        with engine.connect() as conn:  # one thread: the pool hands back this one connection
            self.pgconn = conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
        self.file = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in `stop`)
        self.pgconn.trace(self.file.fileno())
        self.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)

    def round_trips(self, action: Callable[[], Any]) -> list[list[str]]:
        self.file.flush()
        start = os.lseek(self.file.fileno(), 0, os.SEEK_END)
        action()
        os.lseek(self.file.fileno(), start, os.SEEK_SET)
        trips: list[list[str]] = []
        answered = True
        for line in os.read(self.file.fileno(), 1 << 24).decode().splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[0] not in ("F", "B"):
                continue  # the rest of a message whose data held a line break
            side, message = parts[0], parts[2]
            if side == "F":
                if answered:
                    trips.append([])
                trips[-1].append(message.split(" ")[0])
            answered = side == "B"
        return trips

    def stop(self) -> None:
        self.pgconn.untrace()
        self.file.close()


@pytest.fixture
def wired(postgres_url: str) -> Any:
    engine = open_database(postgres_url)
    app = new_app(engine)
    for n in range(3):
        app.enroll({"member": f"m{n}"}, START)
    wire = Wire(engine)
    yield app, wire
    wire.stop()
    engine.dispose()


@pytest.mark.postgres
def test_an_order_placed_closed_and_posted_takes_six_round_trips(wired: Any) -> None:
    app, wire = wired
    for n in range(6):  # psycopg prepares each statement the first time: warm them all
        app.place_order(burritos(f"warm{n}", "m1"), START)
    trips = wire.round_trips(lambda: app.place_order(burritos("o1", "m1"), START))
    # BEGIN with the member's locked read; the program version (cached in the API, not
    # here); promotion uses and visits; the order; the ledger; then the lot, the member's
    # state, the outbox and COMMIT, four statements in one round trip.
    assert len(trips) == 6, trips
    assert trips[0].count("Execute") == 2, trips[0]
    assert trips[-1].count("Execute") == 4, trips[-1]
    assert not any("Parse" in trip or "Query" in trip for trip in trips)  # all prepared


@pytest.mark.postgres
def test_a_refund_and_a_void_send_their_writes_together(wired: Any) -> None:
    app, wire = wired
    for k in ("warm", "o"):  # the second of each is measured, its statements prepared
        app.place_order(burritos(f"{k}1", "m1", qty=2), START)
        app.place_order(burritos(f"{k}2", "m2"), START)
        refund = {"order": f"{k}1", "lines": [{"line": "l1", "qty": 1}]}
        refunded = wire.round_trips(lambda r=refund: app.refund_order(r, START))
        voided = wire.round_trips(lambda k=k: app.void_order({"order": f"{k}2"}, START))
    # 19 and 18 round trips when each of these statements went on its own, and BEGIN too.
    assert (len(refunded), len(voided)) == (11, 10), (refunded, voided)
    # the member's activity, its state, the order's posted columns, the outbox and COMMIT
    assert refunded[-1].count("Execute") == 5, refunded[-1]


@pytest.mark.postgres
def test_a_transaction_that_sent_nothing_says_nothing(wired: Any) -> None:
    app, wire = wired
    engine = app.engine

    def nothing() -> None:
        with engine.begin():
            pass
        with engine.connect() as conn:
            conn.begin()
            conn.rollback()

    assert wire.round_trips(nothing) == []


@pytest.mark.postgres
def test_a_write_waiting_is_sent_before_anything_else_reads(postgres_url: str) -> None:
    engine = open_database(postgres_url)
    try:
        new_app(engine).enroll({"member": "ann"}, START)
        rename = sa.update(members).where(members.c.external_id == sa.bindparam("b_ref"))
        with engine.connect() as conn:
            hot.later(conn, rename, {"b_ref": "ann", "tier": "gold"})
            # SQLAlchemy's own statement on the connection sees the waiting write
            assert conn.execute(sa.select(members.c.tier)).scalar_one() == "gold"
            hot.later(conn, rename, {"b_ref": "ann", "tier": "platinum"})
            conn.rollback()  # what waits is dropped with the transaction, never sent
            assert conn.execute(sa.select(members.c.tier)).scalar_one() == "member"
            hot.later(conn, rename, {"b_ref": "ann", "tier": "platinum"})
            conn.commit()  # SQLAlchemy's commit sends it first
        with engine.connect() as conn:
            assert conn.execute(sa.select(members.c.tier)).scalar_one() == "platinum"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_waiting_write_that_fails_fails_the_transaction_as_sqlalchemy_would(
    postgres_url: str,
) -> None:
    engine = open_database(postgres_url)
    try:
        new_app(engine).enroll({"member": "ann"}, START)
        with engine.connect() as conn:
            env = conn.execute(sa.select(members.c.env_id)).scalar_one()
            hot.later(conn, sa.insert(members), {"env_id": env, "external_id": "bob"})
            with pytest.raises(sa.exc.IntegrityError, match="null value in column"):
                hot.first(conn, sa.select(members.c.id).where(members.c.id < 0), {})
            conn.rollback()
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(members)).scalar() == 1
    finally:
        engine.dispose()
