"""Orders too large for the books, against a real server (docs/api.md, "Limits and bad input").

Each amount alone was bounded, but a line's qty x price x modifiers was not: the auditor's
orders overflowed a 64-bit column (a 500) or, accepted, overflowed the member's balance when
they posted, and that failing posting held back every later one of the environment. Now an
order's total and the points it earns are bounded where it comes in: refused with a 422 that
names the field, changing nothing, and the postings after it go on."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from punchcard.services.inbound import signature

from .conftest import Server

START = "2026-03-03T12:00:00-06:00"
TOTAL = "the order's total is more than 10000000000.00"
POINTS = "order: earns more than 1000000000000 points"
P5 = """\
program: p5
name: P5
currency: USD
timezone: America/Chicago
earn: {points_per_unit: 1000, rounding: floor, accrual_delay: PT1H, negative_balance: allow}
"""


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _line(line_id: str, price: str, qty: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": line_id, "sku": "X", "category": "c", "qty": qty, "unit_price": price, **extra}


HUGE = _line(  # the auditor's line: 1,000,000 x 10,000,000,000.00 and a modifier as large
    "l1",
    "10000000000.00",
    1_000_000,
    modifiers=[{"sku": "M", "category": "m", "qty": 1_000_000, "unit_price": "10000000000.00"}],
)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """A named sandbox on the auditor's program: 1000 points per 1.00, posting an hour after
    the close. Members ann, bob (the auditor's) and cy (for the refusals)."""
    with server.client(server.a["sandbox_key"]) as owner:
        made = owner.post(
            "/v1/sandboxes",
            json={"name": f"huge-{uuid.uuid4().hex[:6]}", "start": START, "copy_programs": False},
            headers=_key(),
        )
    assert made.status_code == 201, made.text
    with server.client(made.json()["key"]) as client:
        version = {"source": P5, "live_from": START}
        answer = client.post("/v1/programs/versions", json=version, headers=_key())
        assert answer.status_code == 201, answer.text
        for member in ("ann", "bob", "cy"):
            assert (
                client.post("/v1/members", json={"id": member}, headers=_key()).status_code == 201
            )
        yield client


def _refused(answer: httpx.Response, detail: str) -> None:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert (body["status"], body["code"], body["detail"]) == (422, "invalid_input", detail)


def _state(http: httpx.Client, member: str) -> tuple[Any, ...]:
    """What a refused request must leave as it was."""
    balance = http.get(f"/v1/members/{member}/balance").json()
    return balance["posted"], balance["pending"], balance["pending_items"]


def _order(
    http: httpx.Client, order_id: str, member: str, *lines: dict[str, Any]
) -> httpx.Response:
    return http.post(
        "/v1/orders", json={"id": order_id, "member": member, "lines": list(lines)}, headers=_key()
    )


def test_the_auditors_huge_orders_are_refused_by_name_and_change_nothing(
    http: httpx.Client,
) -> None:
    before = _state(http, "cy")
    order = {"id": "big1", "member": "cy", "lines": [HUGE]}
    _refused(http.post("/v1/orders/quote", json=order, headers=_key()), f"order.lines: {TOTAL}")
    _refused(http.post("/v1/orders", json=order, headers=_key()), f"order.lines: {TOTAL}")
    twenty = [_line(f"l{i}", "10000000000.00", 1_000_000) for i in range(20)]
    _refused(_order(http, "big2", "cy", *twenty), f"order.lines: {TOTAL}")
    tipped = {"id": "big3", "member": "cy", "lines": [_line("l1", "1.00")], "tip": "9999999999.01"}
    _refused(http.post("/v1/orders", json=tipped, headers=_key()), f"order.tip: {TOTAL}")
    for order_id in ("big1", "big2", "big3"):
        assert http.get(f"/v1/orders/{order_id}").status_code == 404
    assert _state(http, "cy") == before


def test_an_order_past_the_points_bound_is_refused_when_quoted_placed_edited_or_closed(
    http: httpx.Client,
) -> None:
    """1000 points per 1.00: 1,000,000,000.01 would earn 10^12 + 10 points."""
    over = _line("l1", "1000000000.01")
    order = {"id": "p1", "member": "cy", "lines": [over]}
    _refused(http.post("/v1/orders/quote", json=order, headers=_key()), POINTS)
    _refused(http.post("/v1/orders", json=order, headers=_key()), POINTS)
    assert http.get("/v1/orders/p1").status_code == 404
    assert _order(http, "p2", "cy", _line("l1", "1.00")).status_code == 201
    before = (_state(http, "cy"), http.get("/v1/orders/p2").json())
    _refused(http.patch("/v1/orders/p2", json={"lines": [over]}, headers=_key()), POINTS)
    _refused(
        http.patch("/v1/orders/p2", json={"lines": [HUGE]}, headers=_key()), f"edit.lines: {TOTAL}"
    )
    assert (_state(http, "cy"), http.get("/v1/orders/p2").json()) == before
    # An open order earns nothing, so its points are judged when it closes.
    opened = {"id": "p3", "member": "cy", "status": "open", "lines": [over]}
    assert http.post("/v1/orders", json=opened, headers=_key()).status_code == 201
    _refused(http.post("/v1/orders/p3/close", headers=_key()), POINTS)
    assert http.get("/v1/orders/p3").json()["state"] == "open"
    assert _state(http, "cy") == before[0]


def test_the_auditors_sequence_now_refuses_the_huge_order_and_later_postings_go_on(
    http: httpx.Client,
) -> None:
    """f4: two orders of 5e18 points each were taken; posting the second overflowed ann's
    balance and held back every later posting. Now the first is refused, one at the bound
    is taken, and everything posts."""
    _refused(
        _order(http, "B1", "ann", _line("l1", "10000000000.00", 500_000)), f"order.lines: {TOTAL}"
    )
    _refused(_order(http, "B2", "ann", _line("l1", "1000000000.01")), POINTS)
    at_bound = _order(http, "B3", "ann", _line("l1", "1000000000.00"))
    assert at_bound.status_code == 201, at_bound.text
    assert at_bound.json()["outcome"]["points"] == 10**12
    assert _order(http, "N1", "bob", _line("l1", "1.00")).status_code == 201
    moved = http.post("/v1/clock", json={"advance": "PT2H"}, headers=_key())
    assert moved.status_code == 200, moved.text
    assert http.get("/v1/members/ann/balance").json()["posted"] == 10**12
    assert http.get("/v1/members/bob/balance").json()["posted"] == 1000
    assert http.get("/v1/orders/N1").json()["posting"]["state"] == "posted"
    assert http.get("/v1/orders/B1").status_code == 404


def test_an_inbound_order_event_past_the_bound_fails_by_name(server: Server) -> None:
    """The worker applies inbound events through the same use cases: the event ends failed
    with the reason, and nothing is placed."""
    with server.client(server.b["live_key"]) as http:
        member, order = f"m-{uuid.uuid4().hex[:6]}", f"o-{uuid.uuid4().hex[:6]}"
        assert http.post("/v1/members", json={"id": member}, headers=_key()).status_code == 201
        source = http.post(
            "/v1/inbound/sources", json={"mapping": "generic"}, headers=_key()
        ).json()
        event = {
            "id": f"e-{order}",
            "type": "order.placed",
            "order": {"id": order, "member": member, "status": "closed", "lines": [HUGE]},
        }
        body, stamp = json.dumps(event).encode(), str(int(time.time()))
        sent = httpx.post(
            f"{server.url}{source['url']}",
            content=body,
            headers={
                "content-type": "application/json",
                "x-punchcard-timestamp": stamp,
                "x-punchcard-signature": signature(source["secret"], stamp, body),
            },
        )
        assert sent.status_code == 202, sent.text
        deadline = time.monotonic() + 40
        events: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            events = http.get(f"/v1/inbound/sources/{source['id']}/events").json()["events"]
            if events and events[0]["state"] != "pending":
                break
            time.sleep(0.1)
        assert [(e["state"], e["outcome"]) for e in events] == [
            ("failed", f"invalid_input: order.lines: {TOTAL}")
        ]
        assert http.get(f"/v1/orders/{order}").status_code == 404
        assert http.get(f"/v1/members/{member}/balance").json()["posted"] == 0
