"""A request whose in-flight claim lapsed (a slow request, or one on a server that hung) and was
taken over by a retry must not apply its effect as well: it rolls back and replays the answer."""

from __future__ import annotations

import threading
import warnings
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.exceptions import StarletteDeprecationWarning

from punchcard.api import context, routes
from punchcard.api.app import create_app
from punchcard.services import orders, tenants
from punchcard.services.clock import SystemClock
from punchcard.store.database import open_database
from punchcard.worker import due_work

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

PROGRAM = Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
ORDER = {
    "id": "o1",
    "member": "ann",
    "lines": [{"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}],
}


def _tenant_whose_claims_lapse(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[sa.Engine, SystemClock, dict[str, Any]]:
    """A database with one tenant, where every in-flight claim lapses at once: a retry may
    take it over."""
    engine = open_database(url)
    clock = SystemClock()
    made = tenants.create_tenant(engine, "Fence", clock.now())
    monkeypatch.setattr(context, "IN_FLIGHT_LEASE", timedelta(0))
    return engine, clock, made


def _with_program_and_ann(client: TestClient) -> None:
    client.post(
        "/v1/programs/versions",
        json={"source": PROGRAM.read_text()},
        headers={"Idempotency-Key": "p"},
    ).raise_for_status()
    client.post(
        "/v1/members", json={"id": "ann"}, headers={"Idempotency-Key": "m"}
    ).raise_for_status()


@pytest.mark.postgres
def test_a_request_whose_claim_was_taken_over_rolls_back_and_replays(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: SQLite's single writer would make the retry wait for the first request.
    engine, clock, made = _tenant_whose_claims_lapse(postgres_url, monkeypatch)
    first_inside, go_on = threading.Event(), threading.Event()
    parse = orders._parse_new

    def slow_first(*args: Any) -> Any:
        if not first_inside.is_set():
            first_inside.set()
            assert go_on.wait(30)
        return parse(*args)

    monkeypatch.setattr(orders, "_parse_new", slow_first)
    headers = {"Authorization": f"Bearer {made['live_key']}"}
    with TestClient(create_app(engine, clock)) as client:
        client.headers.update(headers)
        _with_program_and_ann(client)
        answers: list[httpx.Response] = []
        first = threading.Thread(
            target=lambda: answers.append(
                client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "o"})
            )
        )
        first.start()
        assert first_inside.wait(30)
        retry = client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "o"})
        assert retry.status_code == 201, retry.text
        go_on.set()
        first.join(30)
        (late,) = answers
    assert late.status_code == 201
    assert late.headers.get("idempotent-replayed") == "true"
    assert late.content == retry.content
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM orders").scalar_one() == 1
        assert (
            conn.exec_driver_sql(
                "SELECT count(*) FROM outbox WHERE type = 'order.evaluated'"
            ).scalar_one()
            == 1
        )


class _Crashed(Exception):
    """The first request's server failed after its claim was taken over."""


@pytest.mark.postgres
def test_a_request_that_fails_after_its_claim_was_taken_over_leaves_the_retry_its_claim(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request whose claim lapsed and was taken over, and which then fails, frees only its
    # own claim: the retry still running answers with its effect, not "still in flight".
    # PostgreSQL only, as above.
    engine, clock, made = _tenant_whose_claims_lapse(postgres_url, monkeypatch)
    inside = [threading.Event(), threading.Event()]
    go_on = [threading.Event(), threading.Event()]
    entered: list[int] = []
    parse = orders._parse_new

    def held(*args: Any) -> Any:
        turn = len(entered)
        entered.append(turn)
        if turn < 2:
            inside[turn].set()
            assert go_on[turn].wait(30)
        if turn == 0:
            raise _Crashed
        return parse(*args)

    monkeypatch.setattr(orders, "_parse_new", held)
    with TestClient(create_app(engine, clock), raise_server_exceptions=False) as client:
        client.headers.update({"Authorization": f"Bearer {made['live_key']}"})
        _with_program_and_ann(client)
        answers: dict[str, httpx.Response] = {}

        def place(name: str) -> None:
            answers[name] = client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "o"})

        first = threading.Thread(target=place, args=("first",))
        first.start()
        assert inside[0].wait(30)
        retry = threading.Thread(target=place, args=("retry",))
        retry.start()  # takes the lapsed claim over
        assert inside[1].wait(30)
        go_on[0].set()  # the first request fails and releases what it holds
        first.join(30)
        go_on[1].set()
        retry.join(30)
    assert answers["first"].status_code == 500
    assert answers["retry"].status_code == 201, answers["retry"].text
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM orders").scalar_one() == 1
        assert conn.exec_driver_sql(
            "SELECT state FROM idempotency_keys WHERE key = 'o'"
        ).scalars().all() == ["done"]


def _in_a_new_sandbox(client: TestClient, made: dict[str, Any], name: str) -> None:
    """Make a named sandbox starting 2026-03-03 12:00 UTC; the client calls with its key."""
    sandbox = client.post(
        "/v1/sandboxes",
        json={"name": name, "start": "2026-03-03T12:00:00Z"},
        headers={"Authorization": f"Bearer {made['sandbox_key']}", "Idempotency-Key": "s"},
    ).json()
    client.headers.update({"Authorization": f"Bearer {sandbox['key']}"})


class _Killed(Exception):
    """The server died after moving the clock, before storing its answer."""


def test_a_clock_advance_retried_after_a_crash_moves_the_clock_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, clock, made = _tenant_whose_claims_lapse(database_url, monkeypatch)
    finish, release = context._finish, context._release

    def die(*_args: Any) -> None:
        raise _Killed

    advance = {"advance": "P1D"}
    with TestClient(create_app(engine, clock), raise_server_exceptions=False) as client:
        _in_a_new_sandbox(client, made, "fence")
        before = datetime.fromisoformat(client.get("/v1/clock").json()["now"])
        monkeypatch.setattr(context, "_finish", die)
        monkeypatch.setattr(
            context, "_release", lambda *_args: None
        )  # a killed server runs nothing
        crashed = client.post("/v1/clock", json=advance, headers={"Idempotency-Key": "c"})
        assert crashed.status_code == 500
        moved = datetime.fromisoformat(client.get("/v1/clock").json()["now"])
        assert moved - before == timedelta(days=1)  # the first attempt moved it, then died
        monkeypatch.setattr(context, "_finish", finish)
        monkeypatch.setattr(context, "_release", release)
        retry = client.post("/v1/clock", json=advance, headers={"Idempotency-Key": "c"})
        assert retry.status_code == 200, retry.text
        assert datetime.fromisoformat(retry.json()["clock"]) == moved
        assert datetime.fromisoformat(client.get("/v1/clock").json()["now"]) == moved
        replay = client.post("/v1/clock", json=advance, headers={"Idempotency-Key": "c"})
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.content == retry.content
        token = retry.json()["consistency_token"]
        assert retry.headers["consistency-token"] == replay.headers["consistency-token"] == token
    engine.dispose()


def test_a_retry_that_takes_over_a_slow_clock_move_moves_the_clock_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move that outlives its key's claim: the retry that takes the key over finds the
    sandbox still held, answers 409 sandbox_busy and keeps the stored plan (it deleted the key
    and its plan, the first request then answered 500, and the next retry advanced again)."""
    engine, clock, made = _tenant_whose_claims_lapse(database_url, monkeypatch)
    inside, go_on = threading.Event(), threading.Event()
    run_due = due_work.run_due

    def slow(*args: Any) -> Any:
        if not inside.is_set():
            inside.set()
            assert go_on.wait(30)
        return run_due(*args)

    monkeypatch.setattr(due_work, "run_due", slow)
    monkeypatch.setattr(routes, "sandbox_lease", partial(due_work.sandbox_lease, wait_s=0.3))
    advance = {"advance": "P1D"}
    with TestClient(create_app(engine, clock)) as client:
        _in_a_new_sandbox(client, made, "slow")
        answers: list[httpx.Response] = []
        first = threading.Thread(
            target=lambda: answers.append(
                client.post("/v1/clock", json=advance, headers={"Idempotency-Key": "c"})
            )
        )
        first.start()
        assert inside.wait(30)
        retry = client.post("/v1/clock", json=advance, headers={"Idempotency-Key": "c"})
        assert (retry.status_code, retry.json()["code"]) == (409, "sandbox_busy")
        assert retry.headers["retry-after"] == "1"
        go_on.set()
        first.join(30)
        (slow_answer,) = answers
        assert slow_answer.status_code == 200, slow_answer.text
        assert slow_answer.json()["clock"] == "2026-03-04T12:00:00+00:00"
        again = client.post("/v1/clock", json=advance, headers={"Idempotency-Key": "c"})
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.content == slow_answer.content
        assert client.get("/v1/clock").json()["now"] == "2026-03-04T12:00:00+00:00"


def test_a_retry_of_a_move_overtaken_by_another_answers_as_made(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A moved the clock an hour and died before storing its answer; B (another key) moved it
    an hour more. A's retry carries out A's stored plan, which is done: 200 for A's hour, not
    a 422 'never moves back' stored under A's key for good."""
    engine, clock, made = _tenant_whose_claims_lapse(database_url, monkeypatch)
    finish = context._finish

    def die(*_args: Any) -> None:
        raise _Killed

    hour = {"advance": "PT1H"}
    with TestClient(create_app(engine, clock), raise_server_exceptions=False) as client:
        _in_a_new_sandbox(client, made, "overtaken")
        monkeypatch.setattr(context, "_finish", die)
        assert (
            client.post("/v1/clock", json=hour, headers={"Idempotency-Key": "A"}).status_code == 500
        )
        monkeypatch.setattr(context, "_finish", finish)
        other = client.post("/v1/clock", json=hour, headers={"Idempotency-Key": "B"})
        assert other.json()["clock"] == "2026-03-03T14:00:00+00:00"
        retry = client.post("/v1/clock", json=hour, headers={"Idempotency-Key": "A"})
        assert retry.status_code == 200, retry.text
        assert (retry.json()["clock"], retry.json()["work_done"]) == (
            "2026-03-03T13:00:00+00:00",
            0,
        )
        replay = client.post("/v1/clock", json=hour, headers={"Idempotency-Key": "A"})
        assert (replay.status_code, replay.content) == (200, retry.content)
        assert client.get("/v1/clock").json()["now"] == "2026-03-03T14:00:00+00:00"
