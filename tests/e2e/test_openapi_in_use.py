"""The OpenAPI document in use, against a real `punchcard serve` on each database.

- Webhooks: a story in a named sandbox makes every event type the service emits; a real
  receiver takes the messages, and each body is checked against its type's schema in the
  document's `webhooks` (`shapes.check_event`: the data's keys exactly, their types and formats).
- A client generated from the live /openapi.json by openapi-python-client (run as its own
  command, as an integrator would) enrolls a member and places an order.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from punchcard.services.webhooks import EVENT_TYPES

from ..integration.receiver import Receiver, receiving
from .conftest import Server
from .shapes import check_event

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PROGRAM = (
    Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
).read_text()


def _line(qty: int, line: str = "l1") -> dict[str, Any]:
    return {"id": line, "sku": "BURR", "category": "burrito", "qty": qty, "unit_price": "9.50"}


class Story:
    """Requests in one sandbox, each asserted to succeed."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def __call__(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        headers = {"Idempotency-Key": uuid.uuid4().hex} if method != "GET" else {}
        answer = self.http.request(method, path, json=body, headers=headers)
        assert answer.status_code == status, f"{method} {path}: {answer.text}"
        return answer.json()


def _tell_every_event(story: Story) -> None:
    """One of each event type: the program, members, orders, rewards, punch cards, tiers,
    expiries and every kind of gift card change."""
    story("POST", "/v1/programs/versions", {"source": PROGRAM, "activate": False}, 201)
    story("POST", "/v1/programs/versions/1/activate", {})
    story("POST", "/v1/members", {"id": "ann"}, 201)
    story("POST", "/v1/members", {"id": "bob"}, 201)
    # 1140 points: gold (1000), enough for five-off (500); a visit punches the card.
    story("POST", "/v1/orders", {"id": "o1", "member": "ann", "lines": [_line(12)]}, 201)
    story("POST", "/v1/members/ann/rewards", {"reward": "five-off", "alias": "ann-5"}, 201)
    open_order = {"id": "o2", "member": "ann", "status": "open", "rewards": ["ann-5"]}
    story("POST", "/v1/orders", {**open_order, "lines": [_line(2)]}, 201)  # reserved
    story("POST", "/v1/orders/o2/void", {})  # released, voided
    used = {"id": "o3", "member": "ann", "rewards": ["ann-5"], "lines": [_line(2)]}
    story("POST", "/v1/orders", used, 201)  # used
    story("POST", "/v1/orders/o1/refunds", {"lines": [{"line": "l1", "qty": 1}]}, 201)
    story("POST", "/v1/members/ann/points/transfers", {"to": "bob", "points": 10}, 201)
    story("POST", "/v1/gift-cards", {"id": "g1", "amount": "50.00"}, 201)
    story("POST", "/v1/gift-cards", {"id": "g2", "amount": "5.00"}, 201)
    story("POST", "/v1/gift-cards/g1/reload", {"amount": "10.00"})
    story("POST", "/v1/gift-cards/g1/redeem", {"amount": "5.00"})
    story("POST", "/v1/gift-cards/g1/holds", {"id": "h1", "amount": "5.00"}, 201)
    story("POST", "/v1/gift-cards/holds/h1/capture", {})
    story("POST", "/v1/gift-cards/g1/holds", {"id": "h2", "amount": "2.00"}, 201)
    story("POST", "/v1/gift-cards/holds/h2/void", {})
    story("POST", "/v1/gift-cards/g1/holds", {"id": "h3", "amount": "1.00"}, 201)  # released
    story("POST", "/v1/gift-cards/g1/transfers", {"to": "g2", "amount": "1.00"}, 201)
    for day in range(2, 11):  # a visit a day: the tenth completes the punch card
        story("POST", "/v1/clock", {"advance": "P1D"})
        order = {"id": f"o-day{day}", "member": "ann", "lines": [_line(1)]}
        story("POST", "/v1/orders", order, 201)
    story("POST", "/v1/clock", {"advance": "P31D"})  # the free burrito's 30 days pass
    story("POST", "/v1/clock", {"advance": "P400D"})  # points expire 12 months after earning
    # An accrual delay: points that wait (points.pending), then post (points.posted).
    delayed = PROGRAM.replace("accrual_delay: PT0S", "accrual_delay: PT1H")
    story("POST", "/v1/programs/versions", {"source": delayed, "activate": False}, 201)
    story("POST", "/v1/programs/versions/2/activate", {})
    story("POST", "/v1/orders", {"id": "o-later", "member": "bob", "lines": [_line(1)]}, 201)
    story("POST", "/v1/clock", {"advance": "PT2H"})


def _wait_for_every_type(receiver: Receiver) -> list[bytes]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with receiver.lock:
            bodies = [r.body for r in receiver.received]
        if {json.loads(b)["type"] for b in bodies} >= set(EVENT_TYPES):
            return bodies
        time.sleep(0.1)
    seen = {json.loads(b)["type"] for b in bodies}
    raise AssertionError(f"never received: {sorted(set(EVENT_TYPES) - seen)}")


def test_every_event_a_real_run_sends_matches_its_schema(server: Server) -> None:
    with server.client(server.a["sandbox_key"]) as http:
        made = http.post(
            "/v1/sandboxes",
            json={
                "name": f"hooks-{uuid.uuid4().hex[:6]}",
                "start": "2026-03-02T12:00:00-06:00",
                "copy_programs": False,  # published here, after the endpoint, to be sent
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert made.status_code == 201, made.text
    with receiving() as receiver, server.client(made.json()["key"]) as http:
        story = Story(http)
        story("POST", "/v1/webhooks/endpoints", {"url": receiver.url}, 201)  # every type
        _tell_every_event(story)
        bodies = _wait_for_every_type(receiver)
    for body in bodies:
        check_event(server.url, body)
    events = [json.loads(body) for body in bodies]
    changes = {e["data"]["change"] for e in events if e["type"] == "gift_card.changed"}
    assert changes == {
        "issued",
        "reloaded",
        "redeemed",
        "authorized",
        "captured",
        "voided",
        "released",
    }
    sources = {e["data"]["source"] for e in events if e["type"] == "reward.issued"}
    assert sources == {"redeem", "punch_card"}
    [gold] = [e["data"] for e in events if e["type"] == "tier.changed"]
    assert (gold["member"], gold["from"], gold["to"]) == ("ann", "member", "gold")
    transfers = {
        e["data"]["member"]: e["data"] for e in events if e["type"] == "points.transferred"
    }
    assert "paid_debt" not in transfers["ann"]  # the giving member's event
    assert transfers["bob"]["paid_debt"] == 0


@pytest.fixture
def generated(server: Server, tmp_path: Path) -> Iterator[str]:
    """A client package generated from the server's own /openapi.json; its import name."""
    assert GENERATOR.exists(), f"{GENERATOR} is missing: pip install openapi-python-client"
    config = tmp_path / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code is imported, not read
    name = f"punchcard_api_{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--url",
            f"{server.url}/openapi.json",
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(tmp_path / name),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]


def test_a_generated_client_enrolls_a_member_and_places_an_order(
    server: Server, generated: str
) -> None:
    def load(module: str) -> Any:
        return importlib.import_module(f"{generated}.{module}")

    client_module, models = load("client"), load("models")
    enroll = load("api.members.enroll_member")
    place = load("api.orders.place_order")
    balance = load("api.members.get_member_balance")
    with server.client(server.a["sandbox_key"]) as http:
        made = http.post(
            "/v1/sandboxes",
            json={"name": f"client-{uuid.uuid4().hex[:6]}", "start": "2026-03-02T12:00:00Z"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert made.status_code == 201, made.text
    client = client_module.AuthenticatedClient(base_url=server.url, token=made.json()["key"])
    with client:
        enrolled = enroll.sync_detailed(
            client=client, body=models.EnrollBody(id="ann"), idempotency_key=uuid.uuid4().hex
        )
        assert enrolled.status_code == 201
        member = enrolled.parsed
        assert isinstance(member, models.MemberWritten)
        assert (member.id, member.tier, member.visits) == ("ann", "member", 0)
        assert (member.points.posted, member.points.pending) == (0, 0)

        again = enroll.sync_detailed(
            client=client, body=models.EnrollBody(id="ann"), idempotency_key=uuid.uuid4().hex
        )
        assert again.status_code == 409
        assert isinstance(again.parsed, models.Problem)
        assert again.parsed.code is models.ProblemCode.INVALID_STATE

        line = models.LineBody(id="l1", sku="BURR", category="burrito", qty=2, unit_price="9.50")
        placed = place.sync_detailed(
            client=client,
            body=models.OrderBody(id="o1", member="ann", lines=[line]),
            idempotency_key=uuid.uuid4().hex,
        )
        assert placed.status_code == 201
        order = placed.parsed
        assert isinstance(order, models.OrderWritten)
        assert (order.id, order.member, order.state) == ("o1", "ann", "closed")
        assert order.outcome.points == 190  # 19.00 at 10 points a dollar
        assert (order.outcome.qualifying_spend.amount, order.lines[0].qty) == ("19.00", 2)

        read = balance.sync(
            client=client,
            member_id="ann",
            consistency_token_query=order.consistency_token,  # the header is _header
            wait_ms=5000,
        )
        assert isinstance(read, models.Balance)
        assert (read.member, read.consistent) == ("ann", True)
        assert read.posted + read.pending == 190
