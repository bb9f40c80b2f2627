"""Bad bodies against a real server: each is answered with an RFC 7807 problem and a stable
code that says what is wrong and where, never a 5xx, and changes nothing."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import Server

LIMIT = 1024 * 1024  # MAX_BODY_BYTES, as docs/api.md states it


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """A named sandbox's admin key, with member m1 (no points), gift card g1 (20.00), open order o1."""
    with server.client(server.a["sandbox_key"]) as owner:
        made = owner.post(
            "/v1/sandboxes",
            json={"name": f"bad-{uuid.uuid4().hex[:6]}", "start": "2026-03-03T12:00:00Z"},
            headers=_key(),
        )
    assert made.status_code == 201, made.text
    with server.client(made.json()["key"]) as client:
        line = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}
        for path, body in [
            ("/v1/members", {"id": "m1"}),
            ("/v1/gift-cards", {"id": "g1", "amount": "20.00"}),
            ("/v1/orders", {"id": "o1", "member": "m1", "status": "open", "lines": [line]}),
        ]:
            assert client.post(path, json=body, headers=_key()).status_code == 201
        yield client


def _state(http: httpx.Client) -> tuple[Any, ...]:
    """What a bad request must leave as it was."""
    member = http.get("/v1/members/m1").json()
    card = http.get("/v1/gift-cards/g1").json()
    order = http.get("/v1/orders/o1").json()
    versions = http.get("/v1/programs/versions").json()
    members = [http.get(f"/v1/members/{m}").status_code for m in ("big", "x", "y", "b")]
    return (
        member["points"],
        member["visits"],
        card["balance"],
        order["state"],
        order.get("outcome"),
        versions,
        members,
    )


def _problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["detail"]
    return dict(body)


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(
    server: Server, http: httpx.Client
) -> None:
    before = _state(http)
    big = b'{"id": "big", "email": "' + b"a" * LIMIT + b'@example.com"}'
    _problem(http.post("/v1/members", content=big, headers=_key()), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts what arrives
        yield b'{"id": "big", "email": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'@example.com"}'

    streamed = http.post("/v1/members", content=chunks(), headers=_key())
    _problem(streamed, 413, "body_too_large")
    program = {"source": "# " + "x" * (2 * LIMIT), "activate": True}
    _problem(
        http.post("/v1/programs/versions", json=program, headers=_key()), 413, "body_too_large"
    )
    assert _state(http) == before
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_body_just_under_the_limit_is_read(http: httpx.Client) -> None:
    source = "# " + "x" * (LIMIT - 100)
    answer = http.post("/v1/programs/versions", json={"source": source}, headers=_key())
    body = _problem(answer, 422, "invalid_input")  # read and judged: a comment is no program
    assert "line" in body["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"id": "x", "email": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
    ],
    ids=["array", "object-in-a-field"],
)
def test_json_nested_100000_levels_is_422_not_a_crash(
    server: Server, http: httpx.Client, body: bytes
) -> None:
    before = _state(http)
    answer = http.post(
        "/v1/members", content=body, headers={**_key(), "content-type": "application/json"}
    )
    problem = _problem(answer, 422, "invalid_input")
    assert problem["detail"] == "body: the JSON is nested too deeply"
    assert _state(http) == before
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_program_nested_100000_levels_is_422_with_its_line(http: httpx.Client) -> None:
    before = _state(http)
    for source in ("[" * 100_000, "a:\n" + "".join(f"{' ' * n}k:\n" for n in range(1, 300))):
        answer = http.post("/v1/programs/versions", json={"source": source}, headers=_key())
        assert "nested more than 64 levels deep" in _problem(answer, 422, "invalid_input")["detail"]
    assert _state(http) == before


LINE = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/orders", {"lines": [{**LINE, "qty": 10**30}]}, "lines[0].qty"),
        ("/v1/orders", {"lines": [{**LINE, "qty": 0}]}, "lines[0].qty"),
        ("/v1/orders", {"lines": [{**LINE, "qty": -3}]}, "lines[0].qty"),
        (
            "/v1/orders",
            {"lines": [{**LINE, "unit_price": "99999999999999999999.99"}]},
            "lines[0].unit_price",
        ),
        ("/v1/orders", {"lines": [{**LINE, "unit_price": "-1.00"}]}, "lines[0].unit_price"),
        ("/v1/orders", {"lines": [LINE], "tax": "99999999999999999999.99"}, "tax"),
        ("/v1/orders", {"lines": [LINE], "tip": "1e400"}, "tip"),
        ("/v1/orders/o1/refunds", {"lines": [{"line": "l1", "qty": 10**30}]}, "qty"),
        ("/v1/gift-cards", {"id": "x", "amount": "99999999999999999999.99"}, "amount"),
        ("/v1/gift-cards", {"id": "y", "amount": "0"}, "amount"),
        ("/v1/gift-cards", {"id": "y", "amount": "-5.00"}, "amount"),
        ("/v1/gift-cards/g1/reload", {"amount": "99999999999999999999.99"}, "amount"),
        ("/v1/gift-cards/g1/reload", {"amount": "0.00"}, "amount"),
        ("/v1/gift-cards/g1/redeem", {"amount": "-1.00"}, "amount"),
        ("/v1/gift-cards/g1/redeem", {"amount": 10**30}, "amount"),
        ("/v1/gift-cards/g1/holds", {"amount": "0"}, "amount"),
        ("/v1/gift-cards/g1/holds", {"amount": "1.001"}, "amount"),
        # JSON true is not 1.00, "2" is not a quantity, "yes" is not a yes: types are strict.
        ("/v1/gift-cards", {"id": "z", "amount": True}, "amount"),
        ("/v1/gift-cards/g1/redeem", {"amount": False, "partial": True}, "amount"),
        ("/v1/gift-cards/g1/redeem", {"amount": "1.00", "partial": "yes"}, "partial"),
        ("/v1/orders", {"lines": [{**LINE, "qty": "2"}]}, "qty"),
        ("/v1/orders", {"lines": [{**LINE, "qty": True}]}, "qty"),
        ("/v1/orders/o1/refunds", {"lines": [{"line": "l1", "qty": 1.0}]}, "qty"),
        ("/v1/orders", {"lines": [LINE], "at": 1772539200}, "at"),
        ("/v1/sandboxes", {"name": "s", "start": 212}, "start"),
    ],
)
def test_huge_negative_and_zero_amounts_and_quantities_are_422_and_change_nothing(
    http: httpx.Client, path: str, body: dict[str, Any], where: str
) -> None:
    if path == "/v1/orders":
        body = {"id": "b", "member": "m1", **body}
    before = _state(http)
    problem = _problem(http.post(path, json=body, headers=_key()), 422, "invalid_input")
    assert where in problem["detail"], problem["detail"]
    assert _state(http) == before


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"id": "x"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (
            b"id=x",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (b"", {}, 422, "invalid_input"),
        (b'{"id": "\xff\xfe"}', {"content-type": "application/json"}, 422, "invalid_input"),
        (b'{"id": "x"', {"content-type": "application/json"}, 422, "invalid_input"),
        (b'["x"]', {"content-type": "application/json"}, 422, "invalid_input"),
        (b'"x"', {"content-type": "application/json"}, 422, "invalid_input"),
        (b"null", {"content-type": "application/json"}, 422, "invalid_input"),
        (b'{"id": "x", "id": "y"}', {"content-type": "application/json"}, 422, "invalid_input"),
        (b'{"id": "x\\ud800"}', {"content-type": "application/json"}, 422, "invalid_input"),
        (
            b'{"id": "x", "email": "a@b.c\\u0000"}',
            {"content-type": "application/json"},
            422,
            "invalid_input",
        ),
    ],
    ids=[
        "text-plain",
        "form",
        "no-body",
        "invalid-utf8",
        "truncated",
        "array",
        "string",
        "null",
        "duplicate-key",
        "lone-surrogate",
        "nul-character",
    ],
)
def test_bodies_that_are_not_a_json_object_are_problems_and_change_nothing(
    http: httpx.Client, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    before = _state(http)
    answer = http.post("/v1/members", content=content, headers={**_key(), **headers})
    problem = _problem(answer, status, code)
    if status == 422:
        assert problem["detail"].startswith("body"), problem["detail"]
    assert _state(http) == before


def test_a_key_given_twice_is_named(http: httpx.Client) -> None:
    answer = http.post(
        "/v1/gift-cards/g1/redeem",
        content=b'{"amount": "1.00", "amount": "20.00"}',
        headers={**_key(), "content-type": "application/json"},
    )
    assert (
        _problem(answer, 422, "invalid_input")["detail"] == "body: the key 'amount' is given twice"
    )


@pytest.mark.parametrize(
    ("path", "raw", "where"),
    [
        ("/v1/gift-cards", b'{"id": "g9", "amount": 19.999999999999999999}', "body.amount"),
        (
            "/v1/orders/quote",
            b'{"id": "o9", "member": "m1", "lines": [{"id": "l1", "sku": "B", "category": "c",'
            b' "qty": 1, "unit_price": 10.0000000000000001}]}',
            "body.lines.0.unit_price",
        ),
        ("/v1/gift-cards/g1/redeem", b'{"amount": 1e400}', "body.amount"),
    ],
)
def test_a_number_a_float_would_change_is_refused_by_name(
    http: httpx.Client, path: str, raw: bytes, where: str
) -> None:
    """Read as a float, 19.999999999999999999 would issue a 20.00 card: refused instead."""
    before = _state(http)
    answer = http.post(path, content=raw, headers={**_key(), "content-type": "application/json"})
    assert _problem(answer, 422, "invalid_input")["detail"] == (
        f"{where}: a number a binary float can not hold exactly; send money as text"
    )
    assert _state(http) == before


def test_money_as_a_json_number_that_a_float_keeps_is_read_exactly(http: httpx.Client) -> None:
    issued = http.post(
        "/v1/gift-cards",
        content=b'{"id": "g-num", "amount": 12.30}',
        headers={**_key(), "content-type": "application/json"},
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["balance"]["amount"] == "12.30"
    tens = http.post(
        "/v1/gift-cards/g-num/redeem",
        content=b'{"amount": 1e1}',
        headers={**_key(), "content-type": "application/json"},
    )
    assert tens.status_code == 200, tens.text
    assert tens.json()["balance"]["amount"] == "2.30"


def test_a_query_parameter_the_endpoint_does_not_take_is_refused_by_name(
    http: httpx.Client, server: Server
) -> None:
    before = _state(http)
    typo = http.get("/v1/programs/versions", params={"limt": "10"})
    assert _problem(typo, 422, "invalid_input")["detail"] == (
        "unknown query parameter 'limt'; this endpoint takes consistency_token, cursor, limit,"
        " wait_ms"
    )
    # A write takes no consistency parameters: they would be silently meaningless there.
    write = http.post("/v1/members", params={"wait_ms": "5"}, json={"id": "q1"}, headers=_key())
    assert _problem(write, 422, "invalid_input")["detail"] == (
        "unknown query parameter 'wait_ms'; this endpoint takes none"
    )
    assert _state(http) == before
    assert http.get("/v1/members/q1").status_code == 404  # the refused write did nothing
    # What each endpoint declares, and on a read the consistency parameters, are taken.
    assert http.get("/v1/programs/versions", params={"limit": "1", "wait_ms": "0"}).is_success
    # Without a key the answer is 401 whatever the query: nothing is told before the key.
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/v1/programs/versions", params={"limt": "1"}).status_code == 401


def test_a_consistency_token_this_api_did_not_give_is_refused_on_any_read(
    http: httpx.Client,
) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 300).decode()  # deep JSON inside the token
    for token in (nested, "x" * 513, "not a token", nested[:-2]):
        answer = http.get("/v1/clock", params={"consistency_token": token})
        assert _problem(answer, 422, "invalid_input")["detail"] == (
            "consistency_token is not a token this API gave"
        )


def test_a_token_for_a_moment_after_now_or_of_another_shape_is_refused(
    http: httpx.Client,
) -> None:
    """Tokens are not secret; one made by hand can only name a moment a read may wait for."""
    quote = {"id": "oq", "member": "m1", "lines": [{"id": "l1", "sku": "B", "category": "c",
             "qty": 1, "unit_price": "1.00"}]}  # fmt: skip
    given = http.post("/v1/orders/quote", json=quote, headers=_key()).json()["consistency_token"]
    real = json.loads(base64.urlsafe_b64decode(given + "=" * (-len(given) % 4)))

    def token(**parts: str) -> str:
        raw = json.dumps({**real, **parts}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    assert http.get("/v1/consistency", params={"consistency_token": given}).json() == {
        "consistent": True
    }
    for forged in (token(t="2099-01-01T00:00:00+00:00"), token(x="1")):
        answer = http.get("/v1/consistency", params={"consistency_token": forged})
        assert _problem(answer, 422, "invalid_input")["detail"] == (
            "consistency_token is not a token this API gave"
        )


def test_a_single_valued_query_parameter_given_twice_is_refused(http: httpx.Client) -> None:
    twice = http.get("/v1/programs/versions?limit=1&limit=50")
    assert _problem(twice, 422, "invalid_input")["detail"] == (
        "query parameter 'limit' is given twice"
    )
    # A list parameter is repeated by design.
    both = http.get("/v1/balances?member=nobody&member=nobody2")
    assert _problem(both, 404, "not_found")


@pytest.mark.parametrize(
    "wait_ms", ["-1", "5001", "1.5", "soon", "", "0" * 40 + "99999", "9" * 5000, "\u0663"]
)
def test_a_bad_wait_ms_is_refused_even_without_a_token(http: httpx.Client, wait_ms: str) -> None:
    """`wait_ms` is declared on every read: a bad one is refused, not ignored because no
    consistency token came with it (the clock is always current, and still checks it)."""
    for path in ("/v1/programs/versions", "/v1/clock"):
        answer = http.get(path, params={"wait_ms": wait_ms})
        assert _problem(answer, 422, "invalid_input")["detail"] == (
            "wait_ms is a whole number of milliseconds, 0 to 5000"
        )
    assert http.get("/v1/clock", params={"wait_ms": "0005000"}).status_code == 200


def test_an_id_written_as_a_whole_number_is_its_text_as_the_document_declares(
    http: httpx.Client, server: Server
) -> None:
    made = http.post("/v1/members", json={"id": 1001}, headers=_key())
    assert made.status_code == 201, made.text
    assert http.get("/v1/members/1001").json()["id"] == "1001"
    schema = httpx.get(f"{server.url}/openapi.json").json()["components"]["schemas"]
    assert schema["EnrollBody"]["properties"]["id"]["anyOf"] == [
        {"type": "string", "maxLength": 200, "minLength": 1},
        {"type": "integer"},
    ]
    assert _problem(
        http.post("/v1/members", json={"id": True}, headers=_key()), 422, "invalid_input"
    )


@pytest.mark.parametrize(
    "content",
    [b"this is not json {", b'{"refund_all": true}', b"[]", b"null"],
    ids=["broken", "a-meaning", "array", "null"],
)
def test_a_body_sent_to_an_endpoint_that_takes_none_is_refused(
    http: httpx.Client, content: bytes
) -> None:
    """Closing or voiding an order reads no body: one that says something was ignored (the
    order closed under broken JSON; `refund_all` was silently dropped)."""
    before = _state(http)
    for action in ("close", "void"):
        answer = http.post(
            f"/v1/orders/o1/{action}",
            content=content,
            headers={**_key(), "content-type": "application/json"},
        )
        problem = _problem(answer, 422, "invalid_input")
        assert problem["detail"] == "body: this endpoint takes no body; send none, or {}"
    assert _state(http) == before


def test_no_body_and_an_empty_object_are_one_request_to_an_endpoint_that_takes_none(
    http: httpx.Client,
) -> None:
    line = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}
    order = {"id": "o-empty", "member": "m1", "status": "open", "lines": [line]}
    assert http.post("/v1/orders", json=order, headers=_key()).status_code == 201
    key = _key()
    closed = http.post("/v1/orders/o-empty/close", json={}, headers=key)
    again = http.post("/v1/orders/o-empty/close", headers=key)  # the retry sends no body
    assert closed.status_code == 200, closed.text
    assert (again.status_code, again.content) == (200, closed.content)
    assert again.headers["idempotent-replayed"] == "true"
