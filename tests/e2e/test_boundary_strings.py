"""Every string at the boundary, over real HTTP: a lone surrogate anywhere in a body, a time
written as digits, a body in UTF-16 or UTF-32, and an id holding a control, invisible or
bidi character are each 422 naming where, and change nothing; and the NFC and NFD spellings
of an id name one member. Each was a 500, or was taken and then made reads answer 500."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from punchcard.services.inbound import signature

from .conftest import Server

LONE = "\ud800"  # sent escaped (`"\ud800"`), as JSON allows and no text column can hold
LINE = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}
ORDER = {
    "id": "o9",
    "member": "m1",
    "status": "open",
    "lines": [
        {
            **LINE,
            "modifiers": [{"sku": "GUAC", "category": "add_on", "qty": 1, "unit_price": "2.00"}],
        }
    ],
    "tenders": [{"type": "gift_card", "amount": "1.00", "gift_card": "g1"}],
}


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _raw(http: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    """`body` as JSON with every non-ASCII character escaped: a lone surrogate as `\\ud800`."""
    content = json.dumps(body).encode()
    headers = {**_key(), "content-type": "application/json"}
    return http.request(method, path, content=content, headers=headers)


@pytest.fixture(scope="module")
def sandbox(server: Server) -> dict[str, str]:
    """A named sandbox of its own: its admin key and id."""
    with server.client(server.a["sandbox_key"]) as owner:
        made = owner.post(
            "/v1/sandboxes",
            json={"name": f"strings-{uuid.uuid4().hex[:6]}", "start": "2026-03-03T12:00:00Z"},
            headers=_key(),
        )
    assert made.status_code == 201, made.text
    return {"key": made.json()["key"], "id": made.json()["id"]}


@pytest.fixture(scope="module")
def http(server: Server, sandbox: dict[str, str]) -> Iterator[httpx.Client]:
    """Member m1, gift card g1 (20.00) and open order o1 (one burrito), in the sandbox."""
    with server.client(sandbox["key"]) as client:
        for path, body in [
            ("/v1/members", {"id": "m1", "email": "m1@example.com"}),
            ("/v1/gift-cards", {"id": "g1", "amount": "20.00"}),
            ("/v1/orders", {"id": "o1", "member": "m1", "status": "open", "lines": [LINE]}),
        ]:
            made = client.post(path, json=body, headers=_key())
            assert made.status_code == 201, made.text
        yield client


def _state(http: httpx.Client) -> tuple[Any, ...]:
    """What a refused request must leave as it was, read through the reads that a stored
    lone surrogate turned into 500s for good: the order and the member's timeline."""
    order = http.get("/v1/orders/o1")
    timeline = http.get("/v1/members/m1/timeline")
    card = http.get("/v1/gift-cards/g1")
    assert (order.status_code, timeline.status_code, card.status_code) == (200, 200, 200)
    made = [
        http.get(path).status_code
        for path in ("/v1/members/x1", "/v1/orders/o9", "/v1/gift-cards/g9", "/v1/members/m2")
    ]
    return (
        order.json(),
        timeline.json(),
        card.json(),
        http.get("/v1/members/m1").json(),
        http.get("/v1/webhooks/endpoints").json(),
        made,
    )


def _refused(answer: httpx.Response, detail: str) -> None:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert (answer.json()["code"], answer.json()["detail"]) == ("invalid_input", detail)


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `base` with the value at `path` (`lines.0.sku`) set."""
    out: Any = json.loads(json.dumps(base))
    here = out
    *parents, last = path.split(".")
    for part in parents:
        here = here[int(part) if isinstance(here, list) else part]
    here[int(last) if isinstance(here, list) else last] = value
    return dict(out)


# (method, route, a good body, the field that gets the lone surrogate)
SURROGATE_FIELDS = [
    ("POST", "/v1/members", {"id": "x1", "email": "x1@example.com"}, "email"),
    ("POST", "/v1/members", {"id": "x1", "phone": "+15555550100"}, "phone"),
    ("POST", "/v1/members", {"id": "x1", "card_number": "400100"}, "card_number"),
    ("POST", "/v1/members", {"id": "x1"}, "id"),
    ("POST", "/v1/members/m1/rewards", {"reward": "five-off", "alias": "r1"}, "alias"),
    ("POST", "/v1/members/m1/points/transfers", {"to": "m2", "points": 1}, "to"),
    ("POST", "/v1/gift-cards/g1/transfers", {"to": "g9", "amount": "1.00"}, "to"),
    ("POST", "/v1/orders", ORDER, "member"),
    ("POST", "/v1/orders", {**ORDER, "rewards": ["r1"]}, "rewards.0"),
    ("POST", "/v1/orders", ORDER, "lines.0.id"),
    ("POST", "/v1/orders", ORDER, "lines.0.sku"),
    ("POST", "/v1/orders", ORDER, "lines.0.category"),
    ("POST", "/v1/orders", ORDER, "lines.0.modifiers.0.sku"),
    ("POST", "/v1/orders", ORDER, "tenders.0.type"),
    ("POST", "/v1/orders", ORDER, "tenders.0.gift_card"),
    ("POST", "/v1/orders/quote", ORDER, "lines.0.sku"),
    ("PATCH", "/v1/orders/o1", {"lines": [LINE]}, "lines.0.sku"),
    ("POST", "/v1/orders/o1/refunds", {"lines": [{"line": "l1", "qty": 1}]}, "lines.0.line"),
    ("POST", "/v1/gift-cards", {"id": "g9", "amount": "5.00"}, "id"),
    ("POST", "/v1/gift-cards/g1/holds", {"id": "h9", "amount": "1.00"}, "id"),
    ("POST", "/v1/webhooks/endpoints", {"url": "https://example.com/hook"}, "url"),
    ("POST", "/v1/sandboxes", {"name": "s9", "start": "2026-03-03T12:00:00Z"}, "name"),
]


@pytest.mark.parametrize(
    ("method", "route", "body", "field"),
    SURROGATE_FIELDS,
    ids=[f"{route}:{field}" for _, route, _, field in SURROGATE_FIELDS],
)
def test_a_lone_surrogate_in_any_field_is_422_naming_it_and_changes_nothing(
    http: httpx.Client, method: str, route: str, body: dict[str, Any], field: str
) -> None:
    before = _state(http)
    answer = _raw(http, method, route, _with(body, field, f"a{LONE}b"))
    _refused(answer, f"body.{field}: a lone surrogate is not text")
    assert _state(http) == before


def test_a_lone_surrogate_in_a_key_is_named_escaped(http: httpx.Client) -> None:
    before = _state(http)
    answer = _raw(http, "POST", "/v1/orders", {**ORDER, "x": {f"k{LONE}": 1}})
    _refused(answer, "body.x.k\\ud800: a lone surrogate is not text")
    assert _state(http) == before


def _strings(value: Any, path: str = "") -> list[str]:
    """The path of every string in a JSON value."""
    if isinstance(value, str):
        return [path]
    if not isinstance(value, dict | list):
        return []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return [p for k, v in items for p in _strings(v, f"{path}.{k}" if path else str(k))]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(_strings(ORDER)),
    at=st.integers(min_value=0, max_value=12),
    code=st.integers(min_value=0xD800, max_value=0xDFFF),
)
def test_a_lone_surrogate_anywhere_in_an_order_is_named_and_nothing_is_placed(
    server: Server, sandbox: dict[str, str], where: str, at: int, code: int
) -> None:
    with server.client(sandbox["key"]) as http:
        value: Any = ORDER
        for part in where.split("."):
            value = value[int(part) if isinstance(value, list) else part]
        text = value[:at] + chr(code) + value[at:]
        answer = _raw(http, "POST", "/v1/orders", _with(ORDER, where, text))
        _refused(answer, f"body.{where}: a lone surrogate is not text")
        assert http.get("/v1/orders/o9").status_code == 404


# (method, route, a good body, its time field)
TIME_FIELDS = [
    ("POST", "/v1/orders", {**ORDER, "at": "2026-03-03T12:00:00Z"}, "at"),
    ("POST", "/v1/sandboxes", {"name": "s9", "start": "2026-03-03T12:00:00Z"}, "start"),
    ("POST", "/v1/clock", {"to": "2026-03-04T12:00:00Z"}, "to"),
    (
        "POST",
        "/v1/programs/versions",
        {"source": "x", "live_from": "2026-03-04T00:00:00Z"},
        "live_from",
    ),
    ("POST", "/v1/programs/versions/1/activate", {"at": "2026-03-04T00:00:00Z"}, "at"),
]


@pytest.mark.parametrize(
    ("method", "route", "body", "field"),
    TIME_FIELDS,
    ids=[f"{route}:{field}" for _, route, _, field in TIME_FIELDS],
)
@pytest.mark.parametrize(
    ("written", "told"),
    [
        ("20260303", "'20260303' needs a UTC offset or Z, like 2026-03-03T12:30:00-06:00"),
        ("1700000000", "'1700000000' is not a time like 2026-03-03T12:30:00-06:00"),
        (1700000000, "1700000000 is not a time; write it like 2026-03-03T12:30:00-06:00"),
    ],
    ids=["yyyymmdd", "unix-seconds", "a-number"],
)
def test_a_time_written_as_digits_is_422_not_seconds_since_1970(
    http: httpx.Client,
    method: str,
    route: str,
    body: dict[str, Any],
    field: str,
    written: Any,
    told: str,
) -> None:
    """Pydantic read `"1700000000"` as 2023-11-14 and `"20260303"` as 1970-08-23."""
    before = (_state(http), http.get("/v1/clock").json(), http.get("/v1/programs/versions").json())
    answer = _raw(http, method, route, {**body, field: written})
    _refused(answer, f"body.{field}: Value error, {told}")
    after = (_state(http), http.get("/v1/clock").json(), http.get("/v1/programs/versions").json())
    assert after == before


ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_body_in_utf16_or_utf32_is_422_not_utf8(http: httpx.Client, encoding: str) -> None:
    """JSON's own reader guesses the encoding from the first bytes and took these."""
    before = _state(http)
    content = json.dumps({"id": "x1"}).encode(encoding)
    answer = http.post(
        "/v1/members", content=content, headers={**_key(), "content-type": "application/json"}
    )
    _refused(answer, "body: the body is not UTF-8 text")
    assert _state(http) == before


def test_a_body_with_a_byte_order_mark_is_422(http: httpx.Client) -> None:
    before = _state(http)
    content = b"\xef\xbb\xbf" + json.dumps({"id": "x1"}).encode()
    answer = http.post(
        "/v1/members", content=content, headers={**_key(), "content-type": "application/json"}
    )
    _refused(answer, "body: starts with a byte order mark (U+FEFF); send UTF-8 without one")
    assert _state(http) == before


REFUSED = {
    "\x7f": "a control character",
    "\x85": "a control character",
    "\x9f": "a control character",
    "\u2028": "a line or paragraph separator",
    "\u2029": "a line or paragraph separator",
    "\u200b": "an invisible character",
    "\u200c": "an invisible character",
    "\u200d": "an invisible character",
    "\u2060": "an invisible character",
    "\ufeff": "an invisible character",
    **{chr(c): "a bidi control" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]},
}


def _told(char: str) -> str:
    return f"holds U+{ord(char):04X}, {REFUSED[char]}, which no id or name may hold"


@pytest.mark.parametrize("char", list(REFUSED), ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_each_refused_character_in_a_member_id_is_422_in_the_body_and_the_path(
    http: httpx.Client, char: str
) -> None:
    before = _state(http)
    answer = _raw(http, "POST", "/v1/members", {"id": f"x{char}1"})
    _refused(answer, f"body.id: Value error, {_told(char)}")
    path = f"/v1/members/{quote(f'x{char}1', safe='')}"  # percent-encoded, as a client sends it
    _refused(http.get(path), f"path.member_id: {_told(char)}")
    assert _state(http) == before


ID_FIELDS = [
    ("POST", "/v1/orders", ORDER, "id"),
    ("POST", "/v1/orders", ORDER, "lines.0.id"),
    ("POST", "/v1/members/m1/rewards", {"reward": "five-off", "alias": "r1"}, "alias"),
    ("POST", "/v1/gift-cards", {"id": "g9", "amount": "5.00"}, "id"),
    ("POST", "/v1/gift-cards/g1/holds", {"id": "h9", "amount": "1.00"}, "id"),
    ("POST", "/v1/sandboxes", {"name": "s9", "start": "2026-03-03T12:00:00Z"}, "name"),
]


@pytest.mark.parametrize(
    ("method", "route", "body", "field"),
    ID_FIELDS,
    ids=[f"{route}:{field}" for _, route, _, field in ID_FIELDS],
)
def test_a_bidi_override_in_any_id_is_422_naming_it(
    http: httpx.Client, method: str, route: str, body: dict[str, Any], field: str
) -> None:
    before = _state(http)
    answer = _raw(http, method, route, _with(body, field, "evil\u202egpj.exe"))
    _refused(answer, f"body.{field}: Value error, {_told(chr(0x202E))}")
    assert _state(http) == before


def test_path_ids_of_every_kind_refuse_a_bidi_override(http: httpx.Client) -> None:
    evil = "a\u202eb"
    for path, param in [
        (f"/v1/orders/{evil}", "order_id"),
        (f"/v1/gift-cards/{evil}", "card_id"),
        (f"/v1/webhooks/endpoints/{evil}", "endpoint_id"),
    ]:
        _refused(http.get(path), f"path.{param}: {_told(chr(0x202E))}")
    _refused(
        http.post(f"/v1/gift-cards/holds/{evil}/void", headers=_key()),
        f"path.hold_id: {_told(chr(0x202E))}",
    )


def test_the_nfc_and_nfd_spellings_of_an_id_name_one_member(http: httpx.Client) -> None:
    nfc, nfd = "jos\u00e9", "jose\u0301"  # José: é as one character, and as e + accent
    made = http.post("/v1/members", json={"id": nfd}, headers=_key())
    assert (made.status_code, made.json()["id"]) == (201, nfc)
    again = http.post("/v1/members", json={"id": nfc}, headers=_key())
    assert (again.status_code, again.json()["code"]) == (409, "invalid_state")
    for spelling in (nfc, nfd):
        read = http.get(f"/v1/members/{spelling}")
        assert (read.status_code, read.json()["id"]) == (200, nfc)
    order = {"id": f"o-{nfd}", "member": nfc, "status": "open", "lines": [LINE]}
    placed = http.post("/v1/orders", json=order, headers=_key())
    assert (placed.status_code, placed.json()["id"], placed.json()["member"]) == (
        201,
        f"o-{nfc}",
        nfc,
    )
    assert http.get(f"/v1/orders/o-{nfd}").json()["id"] == f"o-{nfc}"
    both = http.get("/v1/balances", params=[("member", nfc), ("member", nfd)])
    assert [m["member"] for m in both.json()["members"]] == [nfc]


# Signed inbound events ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(http: httpx.Client) -> dict[str, str]:
    made = http.post("/v1/inbound/sources", json={"mapping": "generic"}, headers=_key())
    assert made.status_code == 201, made.text
    return dict(made.json())


def _send(server: Server, source: dict[str, str], body: bytes) -> httpx.Response:
    stamp = str(int(time.time()))
    return httpx.post(
        f"{server.url}{source['url']}",
        content=body,
        headers={
            "content-type": "application/json",
            "x-punchcard-timestamp": stamp,
            "x-punchcard-signature": signature(source["secret"], stamp, body),
        },
    )


def _events(http: httpx.Client, source: dict[str, str]) -> list[dict[str, Any]]:
    return list(http.get(f"/v1/inbound/sources/{source['id']}/events").json()["events"])


def _placed(member: str, **order: Any) -> dict[str, Any]:
    return {
        "id": f"e-{uuid.uuid4().hex[:8]}",
        "type": "order.placed",
        "order": {"id": f"o-{uuid.uuid4().hex[:8]}", "member": member, "lines": [LINE], **order},
    }


@pytest.mark.parametrize(
    ("body", "told"),
    [
        *[
            (json.dumps(_placed("m1")).encode(encoding), "body: the body is not UTF-8 text")
            for encoding in ENCODINGS
        ],
        (
            b"\xef\xbb\xbf" + json.dumps(_placed("m1")).encode(),
            "body: starts with a byte order mark (U+FEFF); send UTF-8 without one",
        ),
        (
            json.dumps(_placed("m1", lines=[{**LINE, "sku": f"B{LONE}"}])).encode(),
            "body.order.lines.0.sku: a lone surrogate is not text",
        ),
        (
            json.dumps(_placed("m1", lines=[{**LINE, "id": "l\u202e1"}])).encode(),
            f"body.order.lines.0.id: {_told(chr(0x202E))}",
        ),
        (
            json.dumps({**_placed("m1"), "id": "e\u200b1"}).encode(),
            f"id: {_told(chr(0x200B))}",
        ),
    ],
    ids=[*ENCODINGS, "bom", "lone-surrogate", "bidi-line-id", "zero-width-event-id"],
)
def test_a_signed_event_that_is_not_utf8_text_or_holds_a_refused_id_is_422_and_not_stored(
    server: Server, http: httpx.Client, source: dict[str, str], body: bytes, told: str
) -> None:
    """A UTF-16 event passed its signature and then failed to be stored: a 500."""
    before = _events(http, source)
    _refused(_send(server, source, body), told)
    assert _events(http, source) == before


def test_an_event_naming_a_member_in_nfd_applies_to_the_nfc_member(
    server: Server, http: httpx.Client, source: dict[str, str]
) -> None:
    nfc, nfd = "zo\u00eb", "zoe\u0308"
    assert http.post("/v1/members", json={"id": nfc}, headers=_key()).status_code == 201
    event = _placed(nfd)
    event["order"]["id"] = f"o-{nfd}"
    assert _send(server, source, json.dumps(event).encode()).status_code == 202
    deadline = time.monotonic() + 30
    while http.get(f"/v1/orders/o-{nfc}").status_code != 200:
        assert time.monotonic() < deadline, _events(http, source)
        time.sleep(0.1)
    order = http.get(f"/v1/orders/o-{nfd}").json()
    assert (order["id"], order["member"]) == (f"o-{nfc}", nfc)
