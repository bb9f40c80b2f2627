"""A named sandbox starts within the years order times may take (1900 to 9000), over real HTTP.

A start near year 1 or 9999 was taken (201) and broke the sandbox's first enroll or hold
with a 500 (year 10000 out of range); it is refused at the edge, naming the field.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from .conftest import Server

LOW = "body.start: Input should be greater than or equal to 1900-01-01T00:00:00Z"
HIGH = "body.start: Input should be less than 9001-01-01T00:00:00Z"


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _make(server: Server, start: str) -> httpx.Response:
    with server.client(server.a["sandbox_key"]) as owner:
        return owner.post(
            "/v1/sandboxes",
            json={"name": f"start-{uuid.uuid4().hex[:6]}", "start": start},
            headers=_key(),
        )


@pytest.mark.parametrize(
    ("start", "detail"),
    [
        ("0001-01-01T00:00:00Z", LOW),
        ("1899-12-31T23:59:59Z", LOW),
        ("9001-01-01T00:00:00Z", HIGH),
        ("9999-12-31T23:00:00Z", HIGH),
    ],
)
def test_a_start_outside_the_years_1900_to_9000_is_422_naming_the_field(
    server: Server, start: str, detail: str
) -> None:
    answer = _make(server, start)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert (body["status"], body["code"], body["detail"]) == (422, "invalid_input", detail)
    assert body["errors"] == [{"path": "body.start", "message": detail.split(": ", 1)[1]}]


@pytest.mark.parametrize(
    "start", ["1900-01-01T00:00:00Z", "8999-06-30T12:00:00-06:00", "9000-12-31T23:59:59Z"]
)
def test_a_start_within_the_years_is_201_and_the_sandbox_works(server: Server, start: str) -> None:
    made = _make(server, start)
    assert made.status_code == 201, made.text
    assert made.json()["clock"] == start.replace("Z", "+00:00")
    with server.client(made.json()["key"]) as http:
        enrolled = http.post("/v1/members", json={"id": "ann"}, headers=_key())
        assert enrolled.status_code == 201, enrolled.text
        sold = http.post("/v1/gift-cards", json={"id": "g1", "amount": "10.00"}, headers=_key())
        assert sold.status_code == 201, sold.text
        held = http.post("/v1/gift-cards/g1/holds", json={"amount": "1.00"}, headers=_key())
        assert held.status_code == 201, held.text
