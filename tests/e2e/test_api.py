"""The HTTP API through a real server process: idempotency, consistency, problems, gift cards."""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from punchcard.store.tables import idempotency_keys

from ..integration.receiver import receiving
from .conftest import Server, cli, start_server, stop

DEMO = (Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml").read_text()
BURRITO = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 2, "unit_price": "9.50"}


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _sandbox(server: Server, key: str, start: str = "2026-03-03T12:00:00-06:00") -> tuple[str, str]:
    """A fresh named sandbox (id, key) with the tenant's program, at a fixed time."""
    with server.client(key) as http:
        made = http.post(
            "/v1/sandboxes",
            json={"name": f"t-{uuid.uuid4().hex[:6]}", "start": start},
            headers=_key(),
        )
        assert made.status_code == 201, made.text
        return made.json()["id"], made.json()["key"]


def test_health_openapi_and_docs_are_served(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/orders/{order_id}/refunds" in spec["paths"]
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_a_write_without_idempotency_key_is_400_and_changes_nothing(server: Server) -> None:
    _, key = _sandbox(server, server.a["sandbox_key"])
    with server.client(key) as http:
        answer = http.post("/v1/members", json={"id": "ann"})
        assert answer.status_code == 400
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "idempotency_key_missing"
        assert http.get("/v1/members/ann").json()["code"] == "not_found"


def test_the_same_key_replays_the_first_response_byte_for_byte(server: Server) -> None:
    _, key = _sandbox(server, server.a["sandbox_key"])
    with server.client(key) as http:
        http.post("/v1/members", json={"id": "ann"}, headers=_key())
        order = {"id": "o1", "member": "ann", "lines": [BURRITO]}
        headers = _key()
        first = http.post("/v1/orders", json=order, headers=headers)
        again = http.post("/v1/orders", json=order, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        points = http.get("/v1/members/ann").json()["points"]
        assert (points["posted"], points["pending"]) == (190, 0)  # posted as it closed, once


def test_the_same_key_with_another_body_is_422(server: Server) -> None:
    _, key = _sandbox(server, server.a["sandbox_key"])
    with server.client(key) as http:
        headers = _key()
        assert http.post("/v1/members", json={"id": "ann"}, headers=headers).status_code == 201
        other = http.post("/v1/members", json={"id": "bob"}, headers=headers)
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"
        other_path = http.post(
            "/v1/gift-cards", json={"id": "ann", "amount": "1.00"}, headers=headers
        )
        assert other_path.json()["code"] == "idempotency_key_reused"
        assert http.get("/v1/members/bob").status_code == 404


def test_the_same_key_while_the_first_is_running_is_409(server: Server) -> None:
    env_id, key = _sandbox(server, server.a["sandbox_key"])
    key_id = "_".join(key.split("_", 3)[:3])
    body = json.dumps({"id": "ann"}).encode()
    from punchcard.api.context import request_fingerprint, request_secret

    fingerprint = request_fingerprint(request_secret(key), "POST", "/v1/members", "", body)
    now = datetime.now(UTC)
    engine = sa.create_engine(server.database)
    with engine.begin() as conn:  # a first request that is still running
        conn.execute(
            sa.insert(idempotency_keys).values(
                env_id=env_id,
                api_key_id=key_id,
                key="running",
                fingerprint=fingerprint,
                state="in_flight",
                locked_until=now + timedelta(seconds=60),
                created_at=now,
                expires_at=now + timedelta(hours=72),
            )
        )
    engine.dispose()
    with server.client(key) as http:
        answer = http.post(
            "/v1/members",
            content=body,
            headers={"Idempotency-Key": "running", "content-type": "application/json"},
        )
        assert answer.status_code == 409
        assert answer.json()["code"] == "idempotency_key_in_flight"
        assert answer.headers["retry-after"] == "1"


def test_an_expired_key_is_a_new_key(server: Server) -> None:
    env_id, key = _sandbox(server, server.a["sandbox_key"])
    key_id = "_".join(key.split("_", 3)[:3])
    long_ago = datetime.now(UTC) - timedelta(hours=73)
    engine = sa.create_engine(server.database)
    with engine.begin() as conn:  # answered 73 hours ago, for another body: past its 72 hours
        conn.execute(
            sa.insert(idempotency_keys).values(
                env_id=env_id,
                api_key_id=key_id,
                key="old",
                fingerprint="0" * 64,
                state="done",
                locked_until=long_ago,
                status_code=201,
                response=b"{}",
                created_at=long_ago,
                expires_at=long_ago + timedelta(hours=72),
            )
        )
    with server.client(key) as http:
        answer = http.post("/v1/members", json={"id": "ann"}, headers={"Idempotency-Key": "old"})
        assert answer.status_code == 201
        assert "idempotent-replayed" not in answer.headers
        assert answer.json()["id"] == "ann"
        again = http.post("/v1/members", json={"id": "ann"}, headers={"Idempotency-Key": "old"})
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(idempotency_keys.c.state).where(
                idempotency_keys.c.env_id == env_id, idempotency_keys.c.key == "old"
            )
        ).all()
    engine.dispose()
    assert [r.state for r in rows] == ["done"]  # the expired row gave way to the new one


def test_fifty_concurrent_requests_with_one_key_make_one_effect(server: Server) -> None:
    _, key = _sandbox(server, server.a["sandbox_key"])
    with server.client(key) as http:
        assert (
            http.post(
                "/v1/gift-cards", json={"id": "g1", "amount": "100.00"}, headers=_key()
            ).status_code
            == 201
        )
    headers = {"Idempotency-Key": "one-redemption", "Authorization": f"Bearer {key}"}

    def redeem(_: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/gift-cards/g1/redeem",
            json={"amount": "10.00"},
            headers=headers,
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(redeem, range(50)))
    statuses = sorted({a.status_code for a in answers})
    assert set(statuses) <= {200, 409}
    successes = [a for a in answers if a.status_code == 200]
    assert len({a.content for a in successes}) == 1  # every success is the same response
    assert sum("idempotent-replayed" not in a.headers for a in successes) <= 1
    with server.client(key) as http:
        assert http.get("/v1/gift-cards/g1").json()["balance"] == {
            "amount": "90.00",
            "currency": "USD",
        }


def test_errors_are_problems_with_stable_codes(server: Server) -> None:
    _, key = _sandbox(server, server.a["sandbox_key"])
    with server.client(key) as http:
        bad = http.post(
            "/v1/orders",
            json={"id": "o1", "member": "ann", "lines": [{**BURRITO, "qty": "two"}]},
            headers=_key(),
        )
        assert bad.status_code == 422
        assert bad.json()["code"] == "invalid_input"
        assert bad.json()["detail"].startswith("body.lines.0.qty")
        missing = http.post(
            "/v1/orders", json={"id": "o1", "member": "nobody", "lines": [BURRITO]}, headers=_key()
        )
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        http.post("/v1/gift-cards", json={"id": "g1", "amount": "5.00"}, headers=_key())
        poor = http.post("/v1/gift-cards/g1/redeem", json={"amount": "6.00"}, headers=_key())
        assert (poor.status_code, poor.json()["code"]) == (402, "insufficient_funds")
        unauthenticated = httpx.get(f"{server.url}/v1/members/ann")
        assert (unauthenticated.status_code, unauthenticated.json()["code"]) == (
            401,
            "unauthenticated",
        )


def test_a_narrow_key_is_refused_outside_its_scopes(server: Server) -> None:
    from .conftest import cli

    narrow = cli(
        "key",
        "create",
        "--tenant",
        server.a["tenant"],
        "--environment",
        "live",
        "--scope",
        "members:read",
        "--database",
        server.database,
    ).strip()
    with server.client(narrow) as http:
        assert http.get("/v1/rewards").status_code == 200
        refused = http.post("/v1/members", json={"id": "zed"}, headers=_key())
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")


def _token_at(given: str, at: str) -> str:
    """A token of the environment of the `given` one, for the moment `at` (tokens are not
    secret: one made by hand names a moment a read could wait for anyway)."""
    parts = json.loads(base64.urlsafe_b64decode(given + "=" * (-len(given) % 4)))
    raw = json.dumps({"e": parts["e"], "t": at}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_read_with_a_consistency_token_waits_for_the_posting(server: Server) -> None:
    """Points posting a second after the close (a tenant of its own, on the wall clock): a
    token for the moment they are due makes the read wait until the worker has posted them.
    (With no accrual delay an order posts as it closes: see the next test.)"""
    tenant = json.loads(
        cli("tenant", "create", "Delta Bowls", "--json", "--database", server.database)
    )
    with server.client(tenant["live_key"]) as http:
        program = DEMO.replace("accrual_delay: PT0S", "accrual_delay: PT1S")
        published = http.post("/v1/programs/versions", json={"source": program}, headers=_key())
        assert published.status_code == 201, published.text
        http.post("/v1/members", json={"id": "ann"}, headers=_key())
        placed = http.post(
            "/v1/orders", json={"id": "o1", "member": "ann", "lines": [BURRITO]}, headers=_key()
        )
        token = placed.headers["consistency-token"]
        assert placed.json()["consistency_token"] == token
        posting = placed.json()["posting"]
        assert (posting["state"], posting["posted_points"]) == ("pending", 0)
        due = posting["expected_at"]
        assert datetime.fromisoformat(due) - datetime.fromisoformat(placed.json()["placed_at"]) == (
            timedelta(seconds=1)
        )
        balance = http.get(
            "/v1/members/ann/balance",
            params={"consistency_token": _token_at(token, due), "wait_ms": 5000},
        )
        assert datetime.now(UTC) >= datetime.fromisoformat(due)  # it waited for the posting
        assert balance.json()["consistent"] is True
        assert (balance.json()["posted"], balance.json()["pending"]) == (190, 0)
        too_long = http.get(
            "/v1/members/ann/balance", params={"consistency_token": token, "wait_ms": 5001}
        )
        assert too_long.json()["code"] == "invalid_input"


def test_an_order_with_no_accrual_delay_answers_posted_and_its_token_waits_for_nothing(
    server: Server,
) -> None:
    """The demo program posts as the order closes: the answer says posted, and the balance
    read with its token, or without one, already holds the points."""
    with server.client(server.a["live_key"]) as http:
        member = f"m-{uuid.uuid4().hex[:8]}"
        http.post("/v1/members", json={"id": member}, headers=_key())
        placed = http.post(
            "/v1/orders",
            json={"id": f"o-{member}", "member": member, "lines": [BURRITO]},
            headers=_key(),
        )
        posting = placed.json()["posting"]
        assert (posting["state"], posting["posted_points"]) == ("posted", 190)
        assert posting["expected_at"] == placed.json()["placed_at"]
        token = placed.json()["consistency_token"]
        for params in ({"consistency_token": token}, {}):
            balance = http.get(f"/v1/members/{member}/balance", params=params).json()
            assert balance["consistent"] is True
            assert (balance["posted"], balance["pending"], balance["pending_items"]) == (
                190,
                0,
                [],
            )


def test_an_order_reads_back_every_part_it_was_given(server: Server) -> None:
    """Modifiers, discounts, tax, tip, fees and tenders come back as sent, in minor-unit
    exact decimals, and an edit shows in the next read."""
    usd = "USD"
    with server.client(server.a["live_key"]) as http:
        member = f"m-{uuid.uuid4().hex[:8]}"
        http.post("/v1/members", json={"id": member}, headers=_key())
        order = f"o-{member}"
        guac = {"sku": "GUAC", "category": "add_on", "qty": 1, "unit_price": "2.00"}
        placed = http.post(
            "/v1/orders",
            json={
                "id": order,
                "member": member,
                "status": "open",
                "lines": [{**BURRITO, "modifiers": [guac]}],
                "discounts": [{"amount": "1.5", "line": "l1"}, {"amount": "0.25"}],
                "tax": "2.10",
                "tip": 3,
                "tenders": [{"type": "card", "amount": "25.35"}],
            },
            headers=_key(),
        )
        assert placed.status_code == 201, placed.text
        edited = http.patch(f"/v1/orders/{order}", json={"fees": "0.99"}, headers=_key())
        assert edited.status_code == 200, edited.text
        seen = http.get(f"/v1/orders/{order}").json()
    assert seen["lines"] == [
        {
            "id": "l1",
            "sku": "BURR",
            "category": "burrito",
            "qty": 2,
            "refunded_qty": 0,
            "unit_price": {"amount": "9.50", "currency": usd},
            "kind": "item",
            "modifiers": [
                {
                    "sku": "GUAC",
                    "category": "add_on",
                    "qty": 1,
                    "unit_price": {"amount": "2.00", "currency": usd},
                }
            ],
        }
    ]
    assert seen["discounts"] == [
        {"amount": {"amount": "1.50", "currency": usd}, "line": "l1"},
        {"amount": {"amount": "0.25", "currency": usd}, "line": None},
    ]
    assert (seen["tax"], seen["tip"], seen["fees"]) == (
        {"amount": "2.10", "currency": usd},
        {"amount": "3.00", "currency": usd},
        {"amount": "0.99", "currency": usd},
    )
    assert seen["tenders"] == [
        {"type": "card", "amount": {"amount": "25.35", "currency": usd}, "gift_card": None}
    ]
    assert edited.json()["fees"] == seen["fees"]


def test_a_frozen_sandbox_shows_pending_with_its_time_until_the_clock_moves(server: Server) -> None:
    program = (
        "program: burrito-rewards\nname: B\ncurrency: USD\ntimezone: America/Chicago\n"
        "earn: {points_per_unit: 10, accrual_delay: PT2H}\n"
    )
    _, key = _sandbox(server, server.a["sandbox_key"])
    with server.client(key) as http:
        http.post("/v1/programs/versions", json={"source": program}, headers=_key())
        http.post("/v1/members", json={"id": "ann"}, headers=_key())
        placed = http.post(
            "/v1/orders", json={"id": "o1", "member": "ann", "lines": [BURRITO]}, headers=_key()
        )
        token = placed.json()["consistency_token"]
        balance = http.get(
            "/v1/members/ann/balance", params={"consistency_token": token, "wait_ms": 3000}
        ).json()
        assert (balance["consistent"], balance["posted"], balance["pending"]) == (True, 0, 190)
        assert balance["pending_items"] == [
            {"order": "o1", "points": 190, "expected_at": "2026-03-03T20:00:00+00:00"}
        ]
        moved = http.post("/v1/clock", json={"advance": "PT2H"}, headers=_key())
        assert moved.json()["clock"] == "2026-03-03T20:00:00+00:00"
        token = moved.json()["consistency_token"]  # like every write's answer
        assert moved.headers["consistency-token"] == token
        assert http.get("/v1/consistency", params={"consistency_token": token}).json() == {
            "consistent": True
        }
        after = http.get("/v1/members/ann/balance").json()
        assert (after["posted"], after["pending"], after["pending_items"]) == (190, 0, [])
        assert http.get("/v1/clock").json()["movable"] is True
        with server.client(server.a["live_key"]) as live:
            refused = live.post("/v1/clock", json={"advance": "PT1H"}, headers=_key())
            assert (refused.status_code, refused.json()["code"]) == (409, "invalid_state")
        # The tenant's sandbox runs on the wall clock, like live, and stays on it.
        with server.client(server.a["sandbox_key"]) as default:
            before = default.get("/v1/clock").json()
            refused = default.post("/v1/clock", json={"advance": "PT1H"}, headers=_key())
            assert (refused.status_code, refused.json()["code"]) == (409, "invalid_state")
            assert "wall clock" in refused.json()["detail"]
            after = default.get("/v1/clock").json()
            assert before["movable"] is after["movable"] is False
            assert after["now"] > before["now"]  # still running


def test_wrong_pins_lock_the_card_and_are_answered_like_unknown_cards(server: Server) -> None:
    _, key = _sandbox(server, server.a["sandbox_key"])
    with server.client(key) as http:
        card = http.post(
            "/v1/gift-cards", json={"id": "g1", "amount": "25.00"}, headers=_key()
        ).json()
        number, pin = card["number"], card["pin"]
        assert len(number) == 16 and len(pin) == 4
        wrong = f"{(int(pin) + 1) % 10000:04d}"
        ok = http.post(
            "/v1/gift-cards/inquiries", json={"number": number, "pin": pin}, headers=_key()
        )
        assert ok.json()["balance"] == {"amount": "25.00", "currency": "USD"}
        unknown = http.post(
            "/v1/gift-cards/inquiries",
            json={"number": "6000000000000000", "pin": pin},
            headers=_key(),
        )
        answers = [
            http.post(
                "/v1/gift-cards/inquiries", json={"number": number, "pin": wrong}, headers=_key()
            )
            for _ in range(5)
        ]
        locked = http.post(
            "/v1/gift-cards/inquiries", json={"number": number, "pin": pin}, headers=_key()
        )
        for answer in [*answers, locked]:
            assert answer.status_code == unknown.status_code == 404
            assert answer.json() == unknown.json()


def test_balance_inquiries_are_rate_limited_per_key_across_server_processes(
    server: Server,
) -> None:
    """Two more server processes on the same database, each allowing 2 inquiries a minute
    (then one every 30 s): the second counts what the first allowed, so running more
    processes grants no more inquiries."""
    _, key = _sandbox(server, server.b["sandbox_key"])
    limited = {"PUNCHCARD_INQUIRIES_PER_MINUTE": "2"}
    started = [start_server(server.database, "--no-worker", env=limited) for _ in range(2)]
    try:
        one, other = (
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            for url, _ in started
        )
        with one, other:
            answers = [
                http.post(
                    "/v1/gift-cards/inquiries",
                    json={"number": "6000000000000000", "pin": "0000"},
                    headers=_key(),
                )
                for http in (one, other, other, one)
            ]
    finally:
        for _, process in started:
            stop(process)
    assert [a.status_code for a in answers] == [404, 404, 429, 429]
    for refused in answers[2:]:
        assert refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 30


def test_a_resend_from_a_sandbox_whose_clock_is_ahead_goes_out_at_once(server: Server) -> None:
    """Deliveries are scheduled by the server's clock, as the worker sends by it: a sandbox
    30 days ahead does not put its resent message 30 days off."""
    ahead = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    _, key = _sandbox(server, server.a["sandbox_key"], start=ahead)

    def received(count: int) -> list[str]:
        deadline = time.monotonic() + 15
        while len(receiver.ids()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return receiver.ids()

    with receiving() as receiver, server.client(key) as http:
        made = http.post(
            "/v1/webhooks/endpoints",
            json={"url": receiver.url, "event_types": ["member.enrolled"]},
            headers=_key(),
        )
        assert made.status_code == 201, made.text
        http.post("/v1/members", json={"id": "ann"}, headers=_key())
        [message] = received(1)
        resent = http.post(f"/v1/webhooks/messages/{message}/resend", headers=_key())
        assert resent.json()["requeued"] == 1
        assert received(2) == [message, message]


@pytest.mark.parametrize("days", [-300, 300])
def test_a_rotated_secret_keeps_signing_for_a_real_day_in_a_sandbox(
    server: Server, days: int
) -> None:
    """The overlap is about real sends, which receivers check against real clocks: a sandbox
    whose clock is months behind or ahead signs with both secrets, as live does."""
    start = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    _, key = _sandbox(server, server.a["sandbox_key"], start=start)
    with receiving() as receiver, server.client(key) as http:
        made = http.post(
            "/v1/webhooks/endpoints",
            json={"url": receiver.url, "event_types": ["member.enrolled"]},
            headers=_key(),
        ).json()
        rotated = http.post(
            f"/v1/webhooks/endpoints/{made['id']}/rotate-secret", headers=_key()
        ).json()
        assert rotated["secrets"] == 2
        assert http.get(f"/v1/webhooks/endpoints/{made['id']}").json()["secrets"] == 2
        http.post("/v1/members", json={"id": "ann"}, headers=_key())
        deadline = time.monotonic() + 15
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        got = receiver.received[0]
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        for secret in (made["secret"], rotated["secret"]):
            assert Webhook(secret).verify(got.body, got.headers)["type"] == "member.enrolled"


def test_lists_page_with_a_cursor(server: Server) -> None:
    _, key = _sandbox(server, server.a["sandbox_key"])
    with server.client(key) as http:
        http.post("/v1/members", json={"id": "ann"}, headers=_key())
        for n in range(3):
            http.post(
                "/v1/orders",
                json={"id": f"o{n}", "member": "ann", "lines": [BURRITO]},
                headers=_key(),
            )
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/members/ann/timeline", params=params).json()
            assert len(page["events"]) <= 2
            seen += [event["seq"] for event in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(range(1, len(seen) + 1))
        assert len(seen) >= 7  # enrolled, then evaluated + pending (+ posted ...) per order
        versions = http.get("/v1/programs/versions", params={"limit": 1}).json()
        assert [v["version"] for v in versions["versions"]] == [1]
        assert (
            http.get("/v1/members/ann/rewards", params={"limit": 1}).json()["next_cursor"] is None
        )
        bad = http.get("/v1/members/ann/timeline", params={"cursor": "not-a-cursor!"})
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid_input")
