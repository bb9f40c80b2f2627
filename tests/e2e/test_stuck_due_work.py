"""Over real HTTP, against `punchcard serve` on each database: a named sandbox's clock move goes
past a posting the database refuses (it answered 500 and moved nothing), the rest of the
sandbox's postings post, ids and names of 200 characters fit where they are embedded, and
`punchcard audit` names the order set aside. A named sandbox's key can not make sandboxes
(it could make ones it then could neither move nor delete)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from punchcard.store.tables import environments

from .conftest import PUNCHCARD, Server

START = "2026-03-03T12:00:00Z"
DEMO = Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
# Postings 30 minutes after close: only the clock move does them, not the server's worker.
DELAYED = DEMO.read_text().replace("accrual_delay: PT0S", "accrual_delay: PT30M")


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _order(order_id: str, member: str, qty: int) -> dict[str, object]:
    line = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": qty, "unit_price": "10.00"}
    return {"id": order_id, "member": member, "lines": [line]}


@contextmanager
def _refusing(database: str, reference: str) -> Iterator[None]:
    """A trigger on the server's database that refuses one ledger reference: a real failure
    of that one order's posting."""
    engine = sa.create_engine(database)
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON ledger_transactions"
                f" WHEN NEW.reference = '{reference}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.reference = '{reference}' THEN RAISE EXCEPTION 'refused'; END IF;"
                " RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON ledger_transactions"
                " FOR EACH ROW EXECUTE FUNCTION refuse_one()"
            )
    try:
        yield
    finally:
        with engine.begin() as conn:
            if sqlite:
                conn.exec_driver_sql("DROP TRIGGER refuse_one")
            else:
                conn.exec_driver_sql("DROP TRIGGER refuse_one ON ledger_transactions")
                conn.exec_driver_sql("DROP FUNCTION refuse_one()")
        engine.dispose()


def _audit(database: str) -> tuple[int, str]:
    done = subprocess.run(
        [PUNCHCARD, "audit", "--database", database],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "2000"},  # one line per check, however long
    )
    return done.returncode, done.stdout


def test_a_clock_move_goes_past_a_posting_that_fails(server: Server) -> None:
    bad = f"bad-{uuid.uuid4().hex[:8]}"
    long_id = "L" * 200
    with server.client(server.a["sandbox_key"]) as http:
        made = http.post(  # a name of 200 characters: its key is named "sandbox " and it
            "/v1/sandboxes",
            json={"name": "N" * 200, "start": START, "copy_programs": False},
            headers=_key(),
        )
    assert made.status_code == 201, made.text
    sandbox_id, key = made.json()["id"], made.json()["key"]
    with _refusing(server.database, f"order:{bad}"), server.client(key) as http:
        published = http.post("/v1/programs/versions", json={"source": DELAYED}, headers=_key())
        assert published.status_code == 201, published.text
        for member in ("ann", "bob"):
            assert http.post("/v1/members", json={"id": member}, headers=_key()).status_code == 201
        for order in (_order(long_id, "ann", 2), _order(bad, "bob", 1)):
            placed = http.post("/v1/orders", json=order, headers=_key())
            assert placed.status_code == 201, placed.text
        moved = http.post(
            f"/v1/sandboxes/{sandbox_id}/clock", json={"advance": "PT1H"}, headers=_key()
        )
        assert moved.status_code == 200, moved.text
        assert (moved.json()["clock"], moved.json()["work_done"]) == (
            "2026-03-03T13:00:00+00:00",
            1,
        )
        ann = http.get("/v1/members/ann").json()["points"]
        bob = http.get("/v1/members/bob").json()["points"]
        assert (ann["posted"], ann["pending"]) == (200, 0)
        assert (bob["posted"], bob["pending"]) == (0, 100)
        code, report = _audit(server.database)
    assert code == 1
    [row] = [line for line in report.splitlines() if "no due work set aside" in line]
    assert f"posting of order '{bad}' of member 'bob' in environment {sandbox_id}" in row
    assert "due at 2026-03-03T12:30:00+00:00: failed 1x since" in row


def test_a_named_sandboxs_key_can_not_make_sandboxes(server: Server) -> None:
    name = f"child-{uuid.uuid4().hex[:8]}"
    with server.client(server.a["sandbox_key"]) as http:
        made = http.post(
            "/v1/sandboxes", json={"name": f"parent-{name}", "start": START}, headers=_key()
        )
    assert made.status_code == 201, made.text
    with server.client(made.json()["key"]) as http:
        refused = http.post("/v1/sandboxes", json={"name": name, "start": START}, headers=_key())
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "forbidden"
    assert refused.json()["detail"] == (
        "a named sandbox's key manages only its own sandbox: make sandboxes with a key of the"
        " tenant's live or sandbox environment"
    )
    engine = sa.create_engine(server.database)
    with engine.connect() as conn:
        count = sa.select(sa.func.count()).where(environments.c.name == name)
        assert conn.execute(count).scalar_one() == 0  # nothing was made
    engine.dispose()
