"""A consistency token whose time is not a sane moment is refused as invalid input on every
keyed GET, as a query parameter and as a `Consistency-Token` header, over real HTTP.

Tokens are not secret (base64url JSON), so anyone can craft one: a time near year 1 or 9999
in a far offset (`0001-01-01T00:00:00+23:59`) overflowed when the read converted it to UTC
and answered 500."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Server

REFUSED = {
    "type": "https://punchcard.dev/problems/invalid_input",
    "title": "invalid input",
    "status": 422,
    "code": "invalid_input",
    "detail": "consistency_token is not a token this API gave",
}
INSANE = [
    "0001-01-01T00:00:00+23:59",  # before year 1 in UTC
    "9999-12-31T23:59:59-23:59",  # after year 9999 in UTC
    "0001-01-01T00:00:00+00:00",  # before the years the API keeps times in (1900 to 9000)
    "1899-12-31T23:59:59+00:00",
]


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.a["live_key"]) as client:
        yield client


@pytest.fixture(scope="module")
def env_id(http: httpx.Client) -> str:
    """The live environment's id, read from a token this API gave."""
    written = http.post(
        "/v1/members", json={"id": "tok-ann"}, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert written.status_code == 201, written.text
    given = written.json()["consistency_token"]
    parts = json.loads(base64.urlsafe_b64decode(given + "=" * (-len(given) % 4)))
    assert set(parts) == {"e", "t"}
    return str(parts["e"])


def _token(env_id: str, at: str) -> str:
    raw = json.dumps({"e": env_id, "t": at}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _keyed_gets(http: httpx.Client) -> list[str]:
    """Every GET the API takes a key on, its path parameters filled in (the token is judged
    before the route looks anything up)."""
    document = http.get("/openapi.json").json()
    paths = [
        re.sub(r"\{[^}]+\}", "1", path)
        for path, operations in document["paths"].items()
        if "get" in operations and operations["get"].get("security")
    ]
    assert len(paths) > 10
    return sorted(paths)


@pytest.mark.parametrize("at", INSANE)
def test_a_token_of_an_insane_time_is_refused_on_every_keyed_get(
    http: httpx.Client, env_id: str, at: str
) -> None:
    token = _token(env_id, at)
    answers: dict[tuple[str, str], httpx.Response] = {}
    for path in _keyed_gets(http):
        answers[path, "query"] = http.get(path, params={"consistency_token": token})
        answers[path, "header"] = http.get(path, headers={"Consistency-Token": token})
    assert {where: (a.status_code, a.json()) for where, a in answers.items()} == {
        where: (422, REFUSED) for where in answers
    }


def test_a_token_of_a_sane_time_in_a_far_offset_is_taken(http: httpx.Client, env_id: str) -> None:
    """The same moment written in another offset is still a moment: only insane ones fail."""
    token = _token(env_id, "2000-01-01T23:30:00+23:59")
    for answer in (
        http.get("/v1/consistency", params={"consistency_token": token}),
        http.get("/v1/consistency", headers={"Consistency-Token": token}),
    ):
        assert (answer.status_code, answer.json()) == (200, {"consistent": True})
