"""A key never sees another tenant's or environment's data, on every endpoint.

Tenant A makes one of everything in its sandbox; then tenant B's keys (sandbox and
live) and tenant A's live key call every endpoint with A's ids. Each must answer as
if the thing did not exist. A last test fails if an endpoint is missing here.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from .conftest import Server

BURRITO = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 2, "unit_price": "9.50"}

# (method, path template, body): every /v1 endpoint that names a resource of the environment.
CASES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/members/{member}", None),
    ("GET", "/v1/members/{member}/balance", None),
    ("GET", "/v1/members/{member}/timeline", None),
    ("GET", "/v1/members/{member}/rewards", None),
    ("POST", "/v1/members/{member}/rewards", {"reward": "five-off"}),
    ("POST", "/v1/members/{member}/points/transfers", {"to": "{member}-2", "points": 1}),
    ("GET", "/v1/balances?member={member}", None),
    ("GET", "/v1/balances?gift_card={card}", None),
    ("GET", "/v1/orders/{order}", None),
    ("POST", "/v1/orders/{order}/close", None),
    ("PATCH", "/v1/orders/{order}", {"tax": "1.00"}),
    ("POST", "/v1/orders/{order}/refunds", {"all": True}),
    ("POST", "/v1/orders/{order}/void", None),
    ("POST", "/v1/orders", {"id": "o-new", "member": "{member}", "lines": [BURRITO]}),
    ("POST", "/v1/orders/quote", {"id": "o-q", "member": "{member}", "lines": [BURRITO]}),
    ("GET", "/v1/gift-cards/{card}", None),
    ("POST", "/v1/gift-cards/{card}/reload", {"amount": "1.00"}),
    ("POST", "/v1/gift-cards/{card}/redeem", {"amount": "1.00"}),
    ("POST", "/v1/gift-cards/{card}/holds", {"amount": "1.00"}),
    ("POST", "/v1/gift-cards/{card}/transfers", {"to": "{card}-2", "amount": "1.00"}),
    ("POST", "/v1/gift-cards/holds/{hold}/capture", {}),
    ("POST", "/v1/gift-cards/holds/{hold}/void", None),
    ("POST", "/v1/gift-cards/inquiries", {"number": "{number}", "pin": "{pin}"}),
    ("DELETE", "/v1/sandboxes/{sandbox}", None),
    ("POST", "/v1/sandboxes/{sandbox}/clock", {"advance": "PT1H"}),
    ("GET", "/v1/webhooks/endpoints/{endpoint}", None),
    ("PATCH", "/v1/webhooks/endpoints/{endpoint}", {"enabled": False}),
    ("DELETE", "/v1/webhooks/endpoints/{endpoint}", None),
    ("POST", "/v1/webhooks/endpoints/{endpoint}/rotate-secret", None),
    ("GET", "/v1/webhooks/endpoints/{endpoint}/attempts", None),
    ("GET", "/v1/webhooks/endpoints/{endpoint}/dead-letters", None),
    ("POST", "/v1/webhooks/endpoints/{endpoint}/recover", {"since": "2026-01-01T00:00:00Z"}),
    ("POST", "/v1/webhooks/messages/{message}/resend", None),
    ("GET", "/v1/inbound/sources/{source}/events", None),
]
# Endpoints that name nothing of another environment: what they show is the caller's own.
OWN_ONLY = {
    ("GET", "/v1/rewards"),
    ("POST", "/v1/members"),
    ("POST", "/v1/gift-cards"),
    ("GET", "/v1/programs/versions"),
    ("POST", "/v1/programs/versions"),
    ("POST", "/v1/programs/versions/{number}/activate"),
    ("GET", "/v1/programs/diagrams/{name}"),
    ("POST", "/v1/sandboxes"),
    ("POST", "/v1/clock"),
    ("GET", "/v1/clock"),
    ("GET", "/v1/consistency"),
    ("GET", "/v1/webhooks/endpoints"),
    ("POST", "/v1/webhooks/endpoints"),
    ("POST", "/v1/inbound/sources"),
    # Authenticated by the source's signature, not by a key: see tests/e2e/test_inbound.py.
    ("POST", "/v1/inbound/{source_id}"),
}


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@pytest.fixture(scope="module")
def alpha(server: Server) -> dict[str, str]:
    """Tenant A's things, made in a named sandbox of A."""
    with server.client(server.a["sandbox_key"]) as http:
        made = http.post(
            "/v1/sandboxes",
            json={"name": "iso", "start": "2026-03-03T12:00:00-06:00"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        ).json()
    ids = {"sandbox": made["id"], "member": f"m-{uuid.uuid4().hex[:6]}"}
    with server.client(made["key"]) as http:

        def post(path: str, body: dict[str, Any]) -> Any:
            answer = http.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
            assert answer.status_code < 300, answer.text
            return answer.json()

        post("/v1/members", {"id": ids["member"]})
        post("/v1/members", {"id": f"{ids['member']}-2"})  # the other end of a transfer
        ids["order"] = "o-alpha"
        post(
            "/v1/orders",
            {"id": "o-alpha", "member": ids["member"], "lines": [BURRITO], "status": "open"},
        )
        card = post("/v1/gift-cards", {"id": "g-alpha", "amount": "50.00"})
        post("/v1/gift-cards", {"id": "g-alpha-2", "amount": "1.00"})
        ids.update(card="g-alpha", number=card["number"], pin=card["pin"])
        ids["hold"] = post("/v1/gift-cards/g-alpha/holds", {"amount": "5.00", "id": "h-alpha"})[
            "hold"
        ]["id"]
        ids["endpoint"] = post("/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9/hooks"})["id"]
        ids["message"] = "msg_alpha"  # a message id of another environment names nothing either
        ids["source"] = post("/v1/inbound/sources", {"mapping": "generic"})["id"]
        ids["key"] = made["key"]
    return ids


def _other_keys(server: Server) -> list[str]:
    return [server.b["sandbox_key"], server.b["live_key"], server.a["live_key"]]


@pytest.mark.parametrize(
    ("method", "template", "body"), CASES, ids=[f"{m} {p}" for m, p, _ in CASES]
)
def test_other_keys_can_not_reach_a_resource(
    server: Server, alpha: dict[str, str], method: str, template: str, body: dict[str, Any] | None
) -> None:
    path = template.format(**alpha)
    for key in _other_keys(server):
        if template.startswith("/v1/sandboxes") and key == server.a["live_key"]:
            continue  # the same tenant may manage its own sandboxes: that is the point of them
        answer = httpx.request(
            method,
            f"{server.url}{path}",
            json=_fill(body, alpha),
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
            timeout=30,
        )
        assert answer.status_code == 404, (
            f"{method} {path} with another key: {answer.status_code} {answer.text}"
        )
        assert answer.json()["code"] == "not_found"
    with server.client(alpha["key"]) as http:  # ... and A's own things are all still there
        assert http.get(f"/v1/members/{alpha['member']}").json()["points"]["posted"] == 0
        assert http.get("/v1/orders/o-alpha").json()["state"] == "open"
        assert http.get("/v1/gift-cards/g-alpha").json()["balance"]["amount"] == "45.00"


def test_a_tenant_manages_its_own_sandboxes_from_live(server: Server) -> None:
    with server.client(server.a["live_key"]) as http:
        made = http.post(
            "/v1/sandboxes",
            json={"name": "own", "start": "2026-01-01T00:00:00Z"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        ).json()
        moved = http.post(
            f"/v1/sandboxes/{made['id']}/clock",
            json={"advance": "P1D"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert moved.json()["clock"] == "2026-01-02T00:00:00+00:00"
        assert http.delete(f"/v1/sandboxes/{made['id']}").status_code == 204
    gone = httpx.get(f"{server.url}/v1/clock", headers={"Authorization": f"Bearer {made['key']}"})
    assert gone.status_code == 401  # a deleted sandbox's key is revoked


def test_every_endpoint_is_covered_here(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    endpoints = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }
    named = {
        (
            m,
            p.split("?")[0]
            .replace("{member}", "{member_id}")
            .replace("{order}", "{order_id}")
            .replace("{card}", "{card_id}")
            .replace("{hold}", "{hold_id}")
            .replace("{sandbox}", "{sandbox_id}")
            .replace("{endpoint}", "{endpoint_id}")
            .replace("{message}", "{message_id}")
            .replace("{source}/events", "{source_id}/events"),
        )
        for m, p, _ in CASES
    }
    assert endpoints == named | OWN_ONLY
