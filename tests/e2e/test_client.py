"""The Python client against a real server: typed calls, retries that never double, read-your-writes."""

from __future__ import annotations

import uuid

import httpx
import pytest

from punchcard.client import ApiError, Client
from punchcard.errors import InsufficientFunds, NotFound

from .conftest import Server

TACO = {"id": "l1", "sku": "T", "category": "taco", "qty": 2, "unit_price": "3.00"}


def test_the_client_reads_its_writes(server: Server) -> None:
    with Client(server.url, server.b["live_key"]) as client:
        member = f"m-{uuid.uuid4().hex[:6]}"
        client.enroll(member)
        placed = client.place_order({"id": f"o-{member}", "member": member, "lines": [TACO]})
        assert client.wait_for(placed["consistency_token"]) is True
        assert client.balance(member)["posted"] == 60
        with pytest.raises(NotFound):
            client.member("nobody-at-all")
        client.issue_gift_card("2.00", f"g-{member}")
        with pytest.raises(InsufficientFunds):
            client.redeem_gift_card(f"g-{member}", "3.00")
    with Client(server.url, "pc_live_nope_nope") as stranger, pytest.raises(ApiError) as refused:
        stranger.catalogue()
    assert refused.value.code == "unauthenticated"


class _DropsFirstAnswer(httpx.BaseTransport):
    """Sends every request to the real server, but loses the first answer: a network failure
    after the server did the work, the case where a naive retry would double."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.dropped = False
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            self.keys.append(request.headers["idempotency-key"])
            if not self.dropped:
                self.dropped = True
                response.read()
                raise httpx.ReadError("connection lost", request=request)
        return response


def test_a_retry_after_a_lost_answer_reuses_the_key_and_applies_once(server: Server) -> None:
    transport = _DropsFirstAnswer()
    card = f"g-{uuid.uuid4().hex[:6]}"
    with Client(server.url, server.b["live_key"]) as plain:
        plain.issue_gift_card("10.00", card)
    with Client(server.url, server.b["live_key"], transport=transport, backoff_s=0.01) as client:
        answer = client.redeem_gift_card(card, "4.00")
    assert transport.keys[0] == transport.keys[1]  # one logical operation, one key
    assert answer["balance"]["amount"] == "6.00"
    with Client(server.url, server.b["live_key"]) as plain:
        assert plain.gift_card(card)["balance"]["amount"] == "6.00"  # not 2.00


class _BusyFirst(httpx.BaseTransport):
    """Answers the first clock move as a server does while another move holds the sandbox
    (a real one takes 10 s to give up), then sends every request to the real server."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/clock" and request.method == "POST":
            self.keys.append(request.headers["idempotency-key"])
            if len(self.keys) == 1:
                problem = {"status": 409, "code": "sandbox_busy", "detail": "busy"}
                headers = {"content-type": "application/problem+json", "retry-after": "0"}
                return httpx.Response(409, json=problem, headers=headers)
        return self.inner.handle_request(request)


def test_a_busy_sandbox_is_retried_under_the_same_key(server: Server) -> None:
    with Client(server.url, server.a["sandbox_key"]) as owner:
        sandbox = owner.create_sandbox("busy", "2026-03-03T12:00:00Z")
    transport = _BusyFirst()
    with Client(server.url, sandbox["key"], transport=transport, backoff_s=0.01) as client:
        moved = client.move_clock(advance="P1D")
    assert moved["clock"] == "2026-03-04T12:00:00+00:00"
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]


def test_the_client_covers_programs_and_webhooks(server: Server) -> None:
    with Client(server.url, server.b["sandbox_key"]) as client:  # a sandbox may target loopback
        assert client.diagram("hold").startswith("stateDiagram-v2\n    [*] --> pending")
        made = client.create_endpoint("http://127.0.0.1:9/hooks", ["tier.changed"])
        assert made["secret"].startswith("whsec_")
        assert client.rotate_secret(made["id"])["secrets"] == 2
        assert client.update_endpoint(made["id"], enabled=False)["state"] == "disabled"
        assert client.dead_letters(made["id"]) == {"messages": []}
        assert client.attempts(made["id"]) == {"attempts": [], "next_cursor": None}
        assert client.recover(made["id"], "2026-01-01T00:00:00Z")["requeued"] == 0
        client.delete_endpoint(made["id"])
        assert made["id"] not in [e["id"] for e in client.endpoints()["endpoints"]]
        source = client.create_source()
        assert client.inbound_events(source["id"]) == {"events": []}
        with pytest.raises(NotFound):
            client.resend("msg_nothing")
