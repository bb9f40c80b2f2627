"""Inbound order events: verified on the raw bytes, deduplicated, applied in any arrival order."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from punchcard.services.inbound import signature

from .conftest import Server


def _send(
    server: Server,
    source: dict[str, str],
    event: dict[str, object],
    *,
    stamp: int | None = None,
    secret: str | None = None,
) -> httpx.Response:
    body = json.dumps(event).encode()
    ts = str(stamp if stamp is not None else int(time.time()))
    return httpx.post(
        f"{server.url}{source['url']}",
        content=body,
        headers={
            "content-type": "application/json",
            "x-punchcard-timestamp": ts,
            "x-punchcard-signature": signature(secret or source["secret"], ts, body),
        },
    )


def _setup(server: Server) -> tuple[httpx.Client, dict[str, str], str]:
    http = server.client(server.b["live_key"])
    member = f"m-{uuid.uuid4().hex[:6]}"
    http.post("/v1/members", json={"id": member}, headers={"Idempotency-Key": uuid.uuid4().hex})
    source = http.post(
        "/v1/inbound/sources",
        json={"mapping": "generic"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    ).json()
    return http, source, member


def _wait(check: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("not reached in time")


def test_events_arriving_in_reverse_order_all_apply(server: Server) -> None:
    http, source, member = _setup(server)
    order = f"o-{uuid.uuid4().hex[:6]}"
    line = {"id": "l1", "sku": "T", "category": "taco", "qty": 3, "unit_price": "4.00"}
    refund = {
        "id": f"e-{order}-refund",
        "type": "order.refunded",
        "order": {"id": order},
        "refund": {"lines": [{"line": "l1", "qty": 1}]},
    }
    closed = {"id": f"e-{order}-closed", "type": "order.closed", "order": {"id": order}}
    placed = {
        "id": f"e-{order}-placed",
        "type": "order.placed",
        "order": {"id": order, "member": member, "lines": [line]},
    }
    for event in (refund, closed, placed):  # the refund first, the order itself last
        assert _send(server, source, event).status_code == 202  # answered at once, applied later
        time.sleep(0.3)
    _wait(lambda: http.get(f"/v1/members/{member}/balance").json()["posted"] == 80, 40)  # 120 - 40
    events = http.get(f"/v1/inbound/sources/{source['id']}/events").json()["events"]
    assert [(e["event"], e["state"]) for e in events] == [
        (refund["id"], "done"),
        (closed["id"], "done"),
        (placed["id"], "done"),
    ]
    assert events[0]["attempts"] >= 2 and events[1]["attempts"] >= 1  # they waited for the order


def test_duplicates_are_applied_once(server: Server) -> None:
    http, source, member = _setup(server)
    line = {"id": "l1", "sku": "T", "category": "taco", "qty": 1, "unit_price": "5.00"}
    event = {
        "id": f"e-{uuid.uuid4().hex[:6]}",
        "type": "order.placed",
        "order": {
            "id": f"o-{uuid.uuid4().hex[:6]}",
            "member": member,
            "status": "closed",
            "lines": [line],
        },
    }
    first = _send(server, source, event)
    again = _send(server, source, event)
    assert (first.status_code, first.json()) == (202, {"received": True, "duplicate": False})
    assert (again.status_code, again.json()) == (200, {"received": True, "duplicate": True})
    _wait(lambda: http.get(f"/v1/members/{member}/balance").json()["posted"] == 50)
    time.sleep(0.5)
    assert http.get(f"/v1/members/{member}/balance").json()["posted"] == 50


def test_bad_signatures_and_stale_timestamps_are_refused_and_stored_nowhere(server: Server) -> None:
    http, source, _member = _setup(server)
    event = {"id": "e-bad", "type": "order.closed", "order": {"id": "nope"}}
    wrong = _send(server, source, event, secret="not-the-secret")
    stale = _send(server, source, event, stamp=int(time.time()) - 3600)
    assert (wrong.status_code, wrong.json()["code"]) == (401, "bad_signature")
    assert (stale.status_code, stale.json()["code"]) == (401, "bad_signature")
    body = json.dumps(event).encode()
    ts = str(int(time.time()))
    tampered = httpx.post(
        f"{server.url}{source['url']}",
        content=body + b" ",
        headers={
            "x-punchcard-timestamp": ts,
            "x-punchcard-signature": signature(source["secret"], ts, body),
        },
    )
    assert tampered.status_code == 401  # the signature covers the raw bytes
    assert http.get(f"/v1/inbound/sources/{source['id']}/events").json()["events"] == []


@pytest.mark.parametrize(
    ("event_id", "detail"),
    [
        ("e" * 201, "id: at most 200 characters"),
        ("e\u0000", "id: holds U+0000, a control character, which no id or name may hold"),
        ("e\ud800", "body.id: a lone surrogate is not text"),
    ],
    ids=["too-long", "nul", "lone-surrogate"],
)
def test_an_event_id_no_column_can_hold_is_422_and_stored_nowhere(
    server: Server, event_id: str, detail: str
) -> None:
    """They were 500s: the id overflowed its column on PostgreSQL, or could not be stored."""
    http, source, _member = _setup(server)
    event = {"id": event_id, "type": "order.closed", "order": {"id": "o1"}}
    answer = _send(server, source, event)
    assert answer.status_code == 422, answer.text
    assert (answer.json()["code"], answer.json()["detail"]) == ("invalid_input", detail)
    assert http.get(f"/v1/inbound/sources/{source['id']}/events").json()["events"] == []
