"""What an audit found, kept fixed: bad input is 422, races are 409, background work never stops."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from punchcard.services.inbound import signature

from .conftest import Server


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _sandbox(server: Server, key: str, start: str = "2026-03-03T12:00:00Z") -> dict[str, str]:
    with server.client(key) as http:
        made = http.post(
            "/v1/sandboxes",
            json={"name": f"h-{uuid.uuid4().hex[:6]}", "start": start},
            headers=_key(),
        )
        assert made.status_code == 201, made.text
        return dict(made.json())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/programs/versions", {"source": "x", "live_from": "2026-01-01T00:00:00"}),
        ("POST", "/v1/clock", {"advance": "P999999999D"}),
        ("POST", "/v1/clock", {"to": "2026-05-01T00:00:00"}),
        (
            "POST",
            "/v1/orders",
            {
                "id": "o1",
                "member": "m",
                "at": "0001-01-01T00:00:00Z",
                "lines": [
                    {"id": "l1", "sku": "s", "category": "c", "qty": 1, "unit_price": "1.00"}
                ],
            },
        ),
        ("POST", "/v1/members", {"id": "a/b"}),
        ("POST", "/v1/members", {"id": "x" * 201}),
        ("POST", "/v1/gift-cards", {"id": "g" * 201, "amount": "1.00"}),
        ("POST", "/v1/webhooks/endpoints", {"url": "http://[::1/x"}),
        ("POST", "/v1/webhooks/endpoints", {"url": "http://example.com:99999/x"}),
        (
            "GET",
            "/v1/members/ann/timeline?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",
            None,
        ),
        ("POST", "/v1/programs/versions/99999999999999999999/activate", {}),
        # In range in their own offset, out of it in UTC: they overflowed when stored.
        (
            "POST",
            "/v1/programs/versions",
            {"source": "x", "live_from": "9999-12-31T23:59:59-14:00"},
        ),
        ("POST", "/v1/programs/versions/1/activate", {"at": "9999-12-31T23:59:59-14:00"}),
        ("POST", "/v1/clock", {"to": "9000-12-31T23:59:59-23:59"}),
        ("POST", "/v1/webhooks/endpoints/e/recover", {"since": "0001-01-01T00:00:00+14:00"}),
        # A NUL in a path or query: PostgreSQL's text can not hold one (the look-up failed).
        ("GET", "/v1/members/a%00b", None),
        ("GET", "/v1/gift-cards/a%00b", None),
        ("DELETE", "/v1/webhooks/endpoints/a%00b", None),
        ("GET", "/v1/members/ann/timeline?cursor=a%00b", None),
    ],
)
def test_malformed_input_is_422_never_500(
    server: Server, method: str, path: str, body: object
) -> None:
    made = _sandbox(server, server.a["sandbox_key"])
    answer = httpx.request(
        method,
        f"{server.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {made['key']}", **_key()},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_input"


def test_a_nul_in_an_inbound_path_is_422_before_its_signature_is_checked(server: Server) -> None:
    """The inbound route takes no API key: a NUL in its source id made a 500 for anyone."""
    answer = httpx.post(f"{server.url}/v1/inbound/a%00b", content=b"{}")
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_input"
    assert answer.json()["detail"] == "the request's path holds a NUL character (%00)"


def test_a_token_without_an_offset_is_422(server: Server) -> None:
    import base64

    made = _sandbox(server, server.a["sandbox_key"])
    token = base64.urlsafe_b64encode(
        json.dumps({"e": made["id"], "t": "2026-03-03T12:00:00"}).encode()
    ).decode()
    with server.client(made["key"]) as http:
        answer = http.get("/v1/rewards", params={"consistency_token": token})
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_input")


def test_unknown_routes_are_problems(server: Server) -> None:
    answer = httpx.get(f"{server.url}/v1/nothing-here")
    assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
    wrong = httpx.put(f"{server.url}/healthz")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


def test_moving_the_clock_of_a_deleted_or_unknown_sandbox_is_404_at_once(server: Server) -> None:
    """It waited 10 s for a lease no one could take, then answered 409 sandbox_busy."""
    made = _sandbox(server, server.a["sandbox_key"])
    with server.client(server.a["sandbox_key"]) as owner:
        assert owner.delete(f"/v1/sandboxes/{made['id']}").status_code == 204
        for sandbox in (made["id"], "no-such-sandbox"):
            began = time.monotonic()
            answer = owner.post(
                f"/v1/sandboxes/{sandbox}/clock", json={"advance": "P1D"}, headers=_key()
            )
            assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
            assert time.monotonic() - began < 5


def test_a_trailing_slash_is_a_404_problem_not_a_redirect(server: Server) -> None:
    answer = httpx.post(f"{server.url}/v1/members/", json={"id": "m"})
    assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
    assert "location" not in answer.headers


def test_two_idempotency_keys_on_one_request_are_refused(server: Server) -> None:
    made = _sandbox(server, server.a["sandbox_key"])
    answer = httpx.post(
        f"{server.url}/v1/members",
        json={"id": "twice"},
        headers=[
            ("Authorization", f"Bearer {made['key']}"),
            ("Idempotency-Key", "a"),
            ("Idempotency-Key", "b"),
        ],
    )
    assert (answer.status_code, answer.json()["code"]) == (400, "idempotency_key_given_twice")
    with server.client(made["key"]) as http:
        assert http.get("/v1/members/twice").status_code == 404


def test_concurrent_advances_each_move_the_clock(server: Server) -> None:
    """Five advances of a day at once, each under its own key: five days, each answer a
    different day (each planned against the clock the one before left; four were planned
    against the same clock, and the sandbox moved two days)."""
    made = _sandbox(server, server.a["sandbox_key"], start="2026-03-03T12:00:00Z")
    headers = {"Authorization": f"Bearer {made['key']}"}

    def advance(_: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/clock",
            json={"advance": "P1D"},
            headers={**headers, **_key()},
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(advance, range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert sorted(a.json()["clock"] for a in answers) == [
        f"2026-03-0{day}T12:00:00+00:00" for day in range(4, 9)
    ]
    now = httpx.get(f"{server.url}/v1/clock", headers=headers).json()["now"]
    assert now == "2026-03-08T12:00:00+00:00"


def test_concurrent_creates_of_one_id_answer_409_not_500(server: Server) -> None:
    made = _sandbox(server, server.a["sandbox_key"])
    headers = {"Authorization": f"Bearer {made['key']}"}

    def enroll(_: int) -> int:
        return httpx.post(
            f"{server.url}/v1/members",
            json={"id": "same"},
            headers={**headers, **_key()},
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = sorted(pool.map(enroll, range(10)))
    assert statuses == [201] + [409] * 9


def test_a_named_sandboxs_key_manages_only_itself(server: Server) -> None:
    first = _sandbox(server, server.a["sandbox_key"])
    second = _sandbox(server, server.a["sandbox_key"])
    with server.client(first["key"]) as http:
        assert http.delete(f"/v1/sandboxes/{second['id']}").status_code == 404
        moved = http.post(
            f"/v1/sandboxes/{second['id']}/clock", json={"advance": "PT1H"}, headers=_key()
        )
        assert moved.status_code == 404
        assert (
            http.post(
                f"/v1/sandboxes/{first['id']}/clock", json={"advance": "PT1H"}, headers=_key()
            ).status_code
            == 200
        )
    with server.client(server.a["sandbox_key"]) as http:
        assert http.delete(f"/v1/sandboxes/{second['id']}").status_code == 204


def test_an_event_that_can_not_apply_fails_alone_and_work_goes_on(server: Server) -> None:
    made = _sandbox(server, server.b["sandbox_key"])
    with server.client(made["key"]) as http:
        source = http.post("/v1/inbound/sources", json={}, headers=_key()).json()
    with server.client(server.b["sandbox_key"]) as http:
        assert http.delete(f"/v1/sandboxes/{made['id']}").status_code == 204
    body = json.dumps({"id": "e1", "type": "order.closed", "order": {"id": "o1"}}).encode()
    stamp = str(int(time.time()))
    sent = httpx.post(
        f"{server.url}{source['url']}",
        content=body,
        headers={
            "x-punchcard-timestamp": stamp,
            "x-punchcard-signature": signature(source["secret"], stamp, body),
        },
    )
    assert sent.status_code == 202
    with server.client(server.b["live_key"]) as http:  # the worker still posts live orders
        member = f"m-{uuid.uuid4().hex[:6]}"
        http.post("/v1/members", json={"id": member}, headers=_key())
        placed = http.post(
            "/v1/orders",
            json={
                "id": f"o-{member}",
                "member": member,
                "lines": [
                    {"id": "l1", "sku": "T", "category": "taco", "qty": 1, "unit_price": "2.00"}
                ],
            },
            headers=_key(),
        )
        token = placed.json()["consistency_token"]
        balance = http.get(
            f"/v1/members/{member}/balance", params={"consistency_token": token, "wait_ms": 5000}
        )
        assert (balance.json()["consistent"], balance.json()["posted"]) == (True, 20)
