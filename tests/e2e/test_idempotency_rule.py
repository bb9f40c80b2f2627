"""One rule for invalid input and the Idempotency-Key, over real HTTP: a request refused as
invalid input (422), by whichever layer (the body's schema, the guard, a use case), changes
nothing and is not stored, so the same key with a corrected body runs. Every other answer of a
use case (a 409 here) is stored and replayed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Server

PROGRAM = (
    Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
).read_text()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.a["live_key"]) as client:
        yield client


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _problem(answer: httpx.Response, status: int, code: str, detail: str, **extra: Any) -> None:
    """The answer is this problem, answered afresh (not a replay)."""
    assert answer.status_code == status, answer.text
    assert answer.json() == {
        "type": f"https://punchcard.dev/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    assert "idempotent-replayed" not in answer.headers


BROKEN = (
    "program: line 1: program: Field required\nline 1: currency: Field required\n"
    "line 1: timezone: Field required\nline 1: earn: Field required"
)
NICKNAME = "body.nickname: Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        (
            "schema",
            b'{"id": "%s", "nickname": "x"}',
            {
                "detail": NICKNAME,
                "errors": [{"path": "body.nickname", "message": "Extra inputs are not permitted"}],
            },
        ),
        ("guard", b'{"id": "%s", "id": "again"}', {"detail": "body: the key 'id' is given twice"}),
    ],
)
def test_a_member_refused_by_its_schema_or_the_guard_leaves_the_key_for_the_corrected_body(
    http: httpx.Client, name: str, content: bytes, problem: dict[str, Any]
) -> None:
    member, key = f"rule-{name}-{uuid.uuid4().hex[:6]}", _key()
    headers = {**key, "Content-Type": "application/json"}
    for _ in range(2):  # refused each time it is sent: nothing was stored to replay
        refused = http.post("/v1/members", content=content % member.encode(), headers=headers)
        _problem(refused, 422, "invalid_input", **problem)
    assert http.get(f"/v1/members/{member}").status_code == 404
    made = http.post("/v1/members", json={"id": member}, headers=key)
    assert made.status_code == 201, made.text
    assert made.json()["id"] == member
    replay = http.post("/v1/members", json={"id": member}, headers=key)
    assert (replay.status_code, replay.content) == (201, made.content)
    assert replay.headers["idempotent-replayed"] == "true"


def test_a_program_refused_by_its_use_case_leaves_the_key_for_the_corrected_program(
    http: httpx.Client,
) -> None:
    key = _key()
    before = http.get("/v1/programs/versions").json()["versions"]
    broken = {"source": "name: Broken\n"}
    for _ in range(2):  # refused each time it is sent: nothing was stored to replay
        refused = http.post("/v1/programs/versions", json=broken, headers=key)
        _problem(refused, 422, "invalid_input", BROKEN)
    assert http.get("/v1/programs/versions").json()["versions"] == before
    published = http.post("/v1/programs/versions", json={"source": PROGRAM}, headers=key)
    assert published.status_code == 201, published.text
    versions = published.json()["versions"]
    assert [v["version"] for v in versions] == [v["version"] for v in before] + [len(before) + 1]
    replay = http.post("/v1/programs/versions", json={"source": PROGRAM}, headers=key)
    assert (replay.status_code, replay.content) == (201, published.content)
    assert replay.headers["idempotent-replayed"] == "true"
    # Now the key is used: the broken body under it is another request for the same key.
    reused = http.post("/v1/programs/versions", json=broken, headers=key)
    _problem(
        reused,
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was used with another method, path or body",
    )


def test_a_clock_move_refused_after_its_plan_was_stored_leaves_the_key_free(
    server: Server,
) -> None:
    """A clock move stores its plan under the key before it runs; a 422 drops the plan too."""
    with server.client(server.a["sandbox_key"]) as owner:
        made = owner.post(
            "/v1/sandboxes",
            json={"name": f"rule-{uuid.uuid4().hex[:6]}", "start": "2026-03-03T12:00:00Z"},
            headers=_key(),
        )
        assert made.status_code == 201, made.text
    with server.client(made.json()["key"]) as http:
        key = _key()
        now = http.get("/v1/clock").json()["now"]
        assert now == "2026-03-03T12:00:00+00:00"
        too_far = http.post("/v1/clock", json={"advance": "P4000D"}, headers=key)
        _problem(too_far, 422, "invalid_input", "the clock moves at most 3660 days at a time")
        assert http.get("/v1/clock").json()["now"] == now
        moved = http.post("/v1/clock", json={"advance": "P1D"}, headers=key)
        assert moved.status_code == 200, moved.text
        body: dict[str, Any] = moved.json()
        assert (body["clock"], body["work_done"]) == ("2026-03-04T12:00:00+00:00", 0)
        replay = http.post("/v1/clock", json={"advance": "P1D"}, headers=key)
        assert (replay.status_code, replay.content) == (200, moved.content)
        assert replay.headers["idempotent-replayed"] == "true"


def test_a_conflict_is_stored_and_replayed_under_its_key(http: httpx.Client) -> None:
    member = f"rule-dup-{uuid.uuid4().hex[:6]}"
    assert http.post("/v1/members", json={"id": member}, headers=_key()).status_code == 201
    key = _key()
    conflict = http.post("/v1/members", json={"id": member}, headers=key)
    _problem(conflict, 409, "invalid_state", f"member {member!r} is already enrolled")
    replay = http.post("/v1/members", json={"id": member}, headers=key)
    assert (replay.status_code, replay.content) == (409, conflict.content)
    assert replay.headers["idempotent-replayed"] == "true"
