"""Over real HTTP: an inquiry number in digits other than ASCII (`"²1"` answered 500), and an
order naming one reward twice (answered `409 reward r1 is expired`), are 422 invalid_input
naming the field, and change nothing."""

from __future__ import annotations

import uuid

import httpx

from .conftest import Server


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _sandbox(server: Server) -> str:
    """A fresh sandbox's key: its own inquiry limit and its own members."""
    with server.client(server.a["sandbox_key"]) as http:
        made = http.post(
            "/v1/sandboxes",
            json={"name": f"t-{uuid.uuid4().hex[:6]}", "start": "2026-03-03T12:00:00-06:00"},
            headers=_key(),
        )
        assert made.status_code == 201, made.text
        return str(made.json()["key"])


def _problem(answer: httpx.Response) -> tuple[int, str, str]:
    assert answer.headers["content-type"] == "application/problem+json"
    return answer.status_code, answer.json()["code"], answer.json()["detail"]


def test_an_inquiry_number_in_other_digits_is_422_naming_the_field(server: Server) -> None:
    with server.client(_sandbox(server)) as http:
        card = http.post("/v1/gift-cards", json={"id": "g1", "amount": "5.00"}, headers=_key())
        number, pin = card.json()["number"], card.json()["pin"]
        fullwidth = number[:-1] + chr(0xFF10 + int(number[-1]))  # the same digit, fullwidth
        for given in ("²1", "١٢٣٤", fullwidth):
            answer = http.post(
                "/v1/gift-cards/inquiries", json={"number": given, "pin": pin}, headers=_key()
            )
            assert _problem(answer) == (422, "invalid_input", "number: ASCII digits only"), given
        found = http.post(
            "/v1/gift-cards/inquiries", json={"number": number, "pin": pin}, headers=_key()
        )
        assert (found.status_code, found.json()["balance"]["amount"]) == (200, "5.00")


def test_an_order_naming_a_reward_twice_is_422_and_changes_nothing(server: Server) -> None:
    line = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 3, "unit_price": "9.50"}
    with server.client(_sandbox(server)) as http:
        http.post("/v1/members", json={"id": "ann"}, headers=_key())
        earn = {"id": "earn", "member": "ann", "lines": [{**line, "qty": 30}]}  # 2,850 points
        assert http.post("/v1/orders", json=earn, headers=_key()).status_code == 201
        redeemed = http.post(
            "/v1/members/ann/rewards", json={"reward": "five-off", "alias": "r1"}, headers=_key()
        )
        assert redeemed.status_code == 201, redeemed.text
        for named in (["five-off", "r1"], ["r1", "r1"], ["r1", "five-off"]):
            order = {"id": "o1", "member": "ann", "status": "open", "lines": [line]}
            answer = http.post("/v1/orders", json={**order, "rewards": named}, headers=_key())
            assert _problem(answer) == (
                422,
                "invalid_input",
                "rewards[1]: the reward 'r1' is named twice (rewards[0] names it too)",
            ), named
        assert http.get("/v1/orders/o1").json()["code"] == "not_found"
        held = http.get("/v1/members/ann/rewards").json()
        assert [(r["alias"], r["state"]) for r in held["rewards"]] == [("r1", "available")]
