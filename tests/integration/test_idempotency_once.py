"""A write's Idempotency-Key row is inserted once, with its answer, in the use case's own
transaction: one commit per request, no claim before and no update after. Concurrent duplicates
are still decided exactly once, by the unique index: the others wait and replay the answer."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.exceptions import StarletteDeprecationWarning

from punchcard.api.app import create_app
from punchcard.services import orders, tenants
from punchcard.services.clock import SystemClock
from punchcard.store.database import open_database

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

PROGRAM = Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
ORDER = {
    "id": "o1",
    "member": "ann",
    "lines": [{"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}],
}


@pytest.fixture
def app(database_url: str) -> Iterator[tuple[TestClient, sa.Engine]]:
    engine = open_database(database_url)
    clock = SystemClock()
    made = tenants.create_tenant(engine, "Once", clock.now())
    with TestClient(create_app(engine, clock), raise_server_exceptions=False) as client:
        client.headers.update({"Authorization": f"Bearer {made['live_key']}"})
        for key, path, body in (
            ("p", "/v1/programs/versions", {"source": PROGRAM.read_text()}),
            ("m", "/v1/members", {"id": "ann"}),
        ):
            client.post(path, json=body, headers={"Idempotency-Key": key}).raise_for_status()
        yield client, engine
    engine.dispose()


def _statements(engine: sa.Engine) -> list[str]:
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    @sa.event.listens_for(engine, "commit")
    def committed(_conn: Any) -> None:
        seen.append("COMMIT")

    return seen


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(sql).scalar_one())


def test_a_write_inserts_its_key_with_its_answer_in_one_commit(
    app: tuple[TestClient, sa.Engine],
) -> None:
    client, engine = app
    seen = _statements(engine)
    placed = client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "o"})
    assert placed.status_code == 201, placed.text
    keyed = [s for s in seen if "IDEMPOTENCY_KEYS" in s]
    assert len(keyed) == 1 and keyed[0].startswith("INSERT INTO IDEMPOTENCY_KEYS")
    assert seen.count("COMMIT") == 1
    assert seen.index(keyed[0]) < seen.index("COMMIT")  # inside the use case's transaction
    replay = client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "o"})
    assert (replay.status_code, replay.content) == (201, placed.content)
    assert replay.headers["idempotent-replayed"] == "true"
    assert seen.count("COMMIT") == 1  # the replay's run rolled back: nothing more committed
    assert _count(engine, "SELECT count(*) FROM orders") == 1
    assert _count(engine, "SELECT count(*) FROM idempotency_keys WHERE state = 'done'") == 3


def test_a_failed_run_leaves_the_key_free_and_a_retry_runs_it(
    app: tuple[TestClient, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, engine = app
    parse = orders._parse_new

    def crash(*_args: Any) -> Any:
        raise RuntimeError("the server failed mid-request")

    monkeypatch.setattr(orders, "_parse_new", crash)
    failed = client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "o"})
    assert failed.status_code == 500
    assert _count(engine, "SELECT count(*) FROM idempotency_keys WHERE key = 'o'") == 0
    monkeypatch.setattr(orders, "_parse_new", parse)
    retry = client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "o"})
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    other = client.post("/v1/orders", json={**ORDER, "id": "o2"}, headers={"Idempotency-Key": "o"})
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    assert _count(engine, "SELECT count(*) FROM orders") == 1


def test_a_domain_error_is_stored_and_replayed_and_a_422_frees_the_key(
    app: tuple[TestClient, sa.Engine],
) -> None:
    client, engine = app
    stranger = {**ORDER, "member": "nobody"}
    missing = client.post("/v1/orders", json=stranger, headers={"Idempotency-Key": "x"})
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    again = client.post("/v1/orders", json=stranger, headers={"Idempotency-Key": "x"})
    assert (again.status_code, again.content) == (404, missing.content)
    assert again.headers["idempotent-replayed"] == "true"
    bad = {**ORDER, "lines": [{**ORDER["lines"][0], "qty": 0}]}  # type: ignore[dict-item]
    refused = client.post("/v1/orders", json=bad, headers={"Idempotency-Key": "y"})
    assert refused.status_code == 422
    fixed = client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "y"})
    assert fixed.status_code == 201, fixed.text
    assert _count(engine, "SELECT count(*) FROM idempotency_keys WHERE key IN ('x', 'y')") == 2


@pytest.mark.postgres
def test_concurrent_duplicates_are_decided_once_and_the_rest_replay(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL: SQLite runs one writer at a time, so its duplicates never overlap.
    engine = open_database(postgres_url)
    clock = SystemClock()
    made = tenants.create_tenant(engine, "Race", clock.now())
    arrived = threading.Barrier(6)
    parse = orders._parse_new

    def together(*args: Any) -> Any:
        arrived.wait(30)  # every duplicate is inside its own transaction before any goes on
        return parse(*args)

    with TestClient(create_app(engine, clock)) as client:
        client.headers.update({"Authorization": f"Bearer {made['live_key']}"})
        for key, path, body in (
            ("p", "/v1/programs/versions", {"source": PROGRAM.read_text()}),
            ("m", "/v1/members", {"id": "ann"}),
        ):
            client.post(path, json=body, headers={"Idempotency-Key": key}).raise_for_status()
        monkeypatch.setattr(orders, "_parse_new", together)
        answers: list[httpx.Response] = []

        def place() -> None:
            answers.append(client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "o"}))

        threads = [threading.Thread(target=place) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [a.status_code for a in answers] == [201] * 6
    assert len({a.content for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert _count(engine, "SELECT count(*) FROM orders") == 1
    assert _count(engine, "SELECT count(*) FROM outbox WHERE type = 'order.evaluated'") == 1
    assert _count(engine, "SELECT count(*) FROM idempotency_keys WHERE key = 'o'") == 1
    engine.dispose()
