"""Stored responses are sealed with AES-256-GCM (the `cryptography` package, a key HKDF draws from
the caller's secret): they open only with that secret and in the row they were stored in, an
altered one is refused, none holds the plaintext, and rows sealed by the legacy v1 scheme (a
hand-made SHAKE-256 keystream with an HMAC tag) still open."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.exceptions import StarletteDeprecationWarning

from punchcard.api.app import create_app
from punchcard.api.context import SEALED, SEALED_V1, request_secret, seal, unseal
from punchcard.services import tenants
from punchcard.services.clock import SystemClock
from punchcard.store.database import open_database
from punchcard.store.tables import idempotency_keys

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

PROGRAM = Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
BODY = b'{"pin":"4821","gift_card_id":"gc_1"}'
# What the v1 sealer (before AES-GCM) stored for BODY under this API key, written once by it.
LEGACY_KEY = "sk_test_legacy_sealing_key"
LEGACY = bytes.fromhex(
    "0070632d7365616c65642d763100b7b6a8dc2f0e3c111555da06c5ceea4da117"
    "247908fdf9ad05032a09e3697bbe29348a0b51c69fff1e0d70339b2fe397daf3"
    "170e2697c999a19ef86c891a09f44f5d20b436adb1bfafb78572404889402d26"
    "fc81"
)
SECRET = request_secret("pc_live_0123456789ab_some-api-key")
REFUSED = "a stored response does not match its seal"
INTERNAL = {
    "type": "https://punchcard.dev/problems/internal",
    "title": "internal",
    "status": 500,
    "code": "internal",
    "detail": "something went wrong on our side; it has been logged",
}


def _flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_a_sealed_response_opens_with_its_secret_in_its_row() -> None:
    sealed = seal(SECRET, BODY, 7)
    assert sealed.startswith(SEALED) and SEALED == b"\x00pc-sealed-v2\x00"
    assert len(sealed) == len(SEALED) + 12 + len(BODY) + 16  # nonce, text, tag
    assert unseal(SECRET, sealed, 7) == BODY
    again = seal(SECRET, BODY, 7)  # a fresh nonce each time: never the same bytes twice
    assert again[len(SEALED) : len(SEALED) + 12] != sealed[len(SEALED) : len(SEALED) + 12]
    assert again != sealed and unseal(SECRET, again, 7) == BODY
    assert unseal(SECRET, seal(SECRET, b"", 7), 7) == b""


def test_a_sealed_response_holds_no_plaintext() -> None:
    sealed = seal(SECRET, BODY, 7)
    for part in (b"4821", b'"pin"', b"gc_1", BODY):  # long enough not to turn up by chance
        assert part not in sealed[len(SEALED) :]


def test_an_altered_moved_or_foreign_sealed_response_is_refused() -> None:
    sealed = seal(SECRET, BODY, 7)
    altered = [_flipped(sealed, at) for at in range(len(SEALED), len(sealed))]  # nonce, text, tag
    altered += [sealed[:-1], sealed[: len(SEALED) + 12], sealed + b"\x00"]
    for wrong in altered:
        with pytest.raises(ValueError, match=REFUSED):
            unseal(SECRET, wrong, 7)
    with pytest.raises(ValueError, match=REFUSED):
        unseal(SECRET, sealed, 8)  # moved to another row
    with pytest.raises(ValueError, match=REFUSED):
        unseal(request_secret("pc_live_0123456789ab_another-key"), sealed, 7)
    # A v2 row passed off as v1 (or its prefix broken) is no JSON: refused, not returned as is.
    with pytest.raises(ValueError, match=REFUSED):
        unseal(SECRET, SEALED_V1 + sealed[len(SEALED) :], 7)
    with pytest.raises(ValueError, match="a stored response is neither sealed nor JSON"):
        unseal(SECRET, _flipped(sealed, 3), 7)


def test_a_response_sealed_by_the_legacy_v1_scheme_is_still_opened() -> None:
    secret = request_secret(LEGACY_KEY)
    assert LEGACY.startswith(SEALED_V1)
    assert BODY not in LEGACY and b"4821" not in LEGACY
    assert unseal(secret, LEGACY, 1) == BODY  # v1 was bound to no row: any row opens it
    assert unseal(secret, LEGACY, 99) == BODY
    for at in (len(SEALED_V1), len(SEALED_V1) + 20, len(LEGACY) - 1):  # nonce, tag, text
        with pytest.raises(ValueError, match=REFUSED):
            unseal(secret, _flipped(LEGACY, at), 1)
    with pytest.raises(ValueError, match=REFUSED):
        unseal(SECRET, LEGACY, 1)


def test_a_response_stored_before_sealing_is_returned_as_it_is() -> None:
    assert unseal(SECRET, BODY, 7) == BODY


# Through the app, on a real database --------------------------------------------------------


@pytest.fixture
def app(database_url: str) -> Iterator[tuple[TestClient, sa.Engine]]:
    engine = open_database(database_url)
    clock = SystemClock()
    made = tenants.create_tenant(engine, "Sealing", clock.now())
    with TestClient(create_app(engine, clock), raise_server_exceptions=False) as client:
        client.headers.update({"Authorization": f"Bearer {made['live_key']}"})
        client.post(  # gift cards take their currency from the program
            "/v1/programs/versions",
            json={"source": PROGRAM.read_text()},
            headers={"Idempotency-Key": "p"},
        ).raise_for_status()
        yield client, engine
    engine.dispose()


def _rows(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(sa.select(idempotency_keys.c.key, idempotency_keys.c.response))
        return {row.key: row.response for row in found}


def _set(engine: sa.Engine, key: str, response: bytes) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(idempotency_keys)
            .where(idempotency_keys.c.key == key)
            .values(response=response)
        )


def test_a_stored_gift_card_answer_holds_no_pin_and_replays_for_its_key(
    app: tuple[TestClient, sa.Engine],
) -> None:
    client, engine = app
    sell = {"id": "g-seal", "amount": "20.00"}
    card = client.post("/v1/gift-cards", json=sell, headers={"Idempotency-Key": "k1"})
    assert card.status_code == 201, card.text
    pin, number = card.json()["pin"], card.json()["number"]
    stored = _rows(engine)["k1"]
    assert stored.startswith(SEALED)
    for plain in (pin.encode(), number.encode(), b"g-seal", b"consistency_token", card.content):
        assert plain not in stored[len(SEALED) :]
    replay = client.post("/v1/gift-cards", json=sell, headers={"Idempotency-Key": "k1"})
    assert (replay.status_code, replay.content) == (201, card.content)
    assert replay.headers["idempotent-replayed"] == "true"


def test_an_altered_or_moved_stored_answer_is_refused_not_replayed(
    app: tuple[TestClient, sa.Engine],
) -> None:
    client, engine = app
    sells = {key: {"id": f"g-{key}", "amount": "5.00"} for key in ("k1", "k2", "k3")}
    for key, sell in sells.items():
        sold = client.post("/v1/gift-cards", json=sell, headers={"Idempotency-Key": key})
        assert sold.status_code == 201, sold.text
    rows = _rows(engine)
    _set(engine, "k1", _flipped(rows["k1"], len(rows["k1"]) - 20))  # one bit of the text
    _set(engine, "k2", rows["k3"])  # another request's sealed answer, moved into this row
    for key in ("k1", "k2"):
        replay = client.post("/v1/gift-cards", json=sells[key], headers={"Idempotency-Key": key})
        assert (replay.status_code, replay.json()) == (500, INTERNAL)
    intact = client.post("/v1/gift-cards", json=sells["k3"], headers={"Idempotency-Key": "k3"})
    assert (intact.status_code, intact.headers["idempotent-replayed"]) == (201, "true")
