"""Stored responses are sealed with AES-256-GCM (the `cryptography` package, a key HKDF draws from
the caller's secret): they open only with that secret and under the key they were stored with,
an altered one is refused, none holds the plaintext, and rows sealed by the earlier schemes (v2,
bound to the row id; v1, a hand-made SHAKE-256 keystream with an HMAC tag) still open."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.exceptions import StarletteDeprecationWarning

from punchcard.api.app import create_app
from punchcard.api.context import (
    SEALED,
    SEALED_V1,
    SEALED_V2,
    key_scope,
    request_secret,
    seal,
    unseal,
)
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
SCOPE = key_scope("env-1", "pc_live_0123456789ab", "k1")
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


def test_a_sealed_response_opens_with_its_secret_under_its_key() -> None:
    sealed = seal(SECRET, BODY, SCOPE)
    assert sealed.startswith(SEALED) and SEALED == b"\x00pc-sealed-v3\x00"
    assert len(sealed) == len(SEALED) + 12 + len(BODY) + 16  # nonce, text, tag
    assert unseal(SECRET, sealed, SCOPE, 7) == BODY
    again = seal(SECRET, BODY, SCOPE)  # a fresh nonce each time: never the same bytes twice
    assert again[len(SEALED) : len(SEALED) + 12] != sealed[len(SEALED) : len(SEALED) + 12]
    assert again != sealed and unseal(SECRET, again, SCOPE, 7) == BODY
    assert unseal(SECRET, seal(SECRET, b"", SCOPE), SCOPE, 7) == b""


def test_a_sealed_response_holds_no_plaintext() -> None:
    sealed = seal(SECRET, BODY, SCOPE)
    for part in (b"4821", b'"pin"', b"gc_1", BODY):  # long enough not to turn up by chance
        assert part not in sealed[len(SEALED) :]


def test_an_altered_moved_or_foreign_sealed_response_is_refused() -> None:
    sealed = seal(SECRET, BODY, SCOPE)
    altered = [_flipped(sealed, at) for at in range(len(SEALED), len(sealed))]  # nonce, text, tag
    altered += [sealed[:-1], sealed[: len(SEALED) + 12], sealed + b"\x00"]
    for wrong in altered:
        with pytest.raises(ValueError, match=REFUSED):
            unseal(SECRET, wrong, SCOPE, 7)
    for elsewhere in (
        key_scope("env-1", "pc_live_0123456789ab", "k2"),  # another key of the same caller
        key_scope("env-2", "pc_live_0123456789ab", "k1"),  # the same key in another environment
        key_scope("env-1", "pc_live_0123456789ac", "k1"),  # another API key's
        key_scope("env-1", "pc_live_0123456789a", "bk1"),  # the same bytes, cut elsewhere
    ):
        with pytest.raises(ValueError, match=REFUSED):
            unseal(SECRET, sealed, elsewhere, 7)  # moved under another key
    with pytest.raises(ValueError, match=REFUSED):
        unseal(request_secret("pc_live_0123456789ab_another-key"), sealed, SCOPE, 7)
    # A v3 row passed off as v2 (or v1), or its prefix broken, is refused, not returned as is.
    with pytest.raises(ValueError, match=REFUSED):
        unseal(SECRET, SEALED_V2 + sealed[len(SEALED) :], SCOPE, 7)
    # A v3 row passed off as v1 (or its prefix broken) is no JSON: refused, not returned as is.
    with pytest.raises(ValueError, match=REFUSED):
        unseal(SECRET, SEALED_V1 + sealed[len(SEALED) :], SCOPE, 7)
    with pytest.raises(ValueError, match="a stored response is neither sealed nor JSON"):
        unseal(SECRET, _flipped(sealed, 3), SCOPE, 7)


def _sealed_v2(body: bytes, row_id: int) -> bytes:
    """What the v2 sealer stored: AES-256-GCM under the same HKDF key, bound to the row id."""
    aead = AESGCM(HKDF(hashes.SHA256(), 32, None, b"punchcard stored response v2").derive(SECRET))
    nonce = bytes(range(12))
    return SEALED_V2 + nonce + aead.encrypt(nonce, body, SEALED_V2 + b"%d" % row_id)


def test_a_response_sealed_by_v2_opens_in_its_row_only() -> None:
    stored = _sealed_v2(BODY, 7)
    assert unseal(SECRET, stored, SCOPE, 7) == BODY
    assert unseal(SECRET, stored, key_scope("e", "k", "other"), 7) == BODY  # v2 bound the row
    with pytest.raises(ValueError, match=REFUSED):
        unseal(SECRET, stored, SCOPE, 8)  # moved to another row
    with pytest.raises(ValueError, match=REFUSED):
        unseal(SECRET, _flipped(stored, len(stored) - 1), SCOPE, 7)


def test_a_response_sealed_by_the_legacy_v1_scheme_is_still_opened() -> None:
    secret = request_secret(LEGACY_KEY)
    assert LEGACY.startswith(SEALED_V1)
    assert BODY not in LEGACY and b"4821" not in LEGACY
    assert unseal(secret, LEGACY, SCOPE, 1) == BODY  # v1 was bound to no row: any row opens it
    assert unseal(secret, LEGACY, SCOPE, 99) == BODY
    for at in (len(SEALED_V1), len(SEALED_V1) + 20, len(LEGACY) - 1):  # nonce, tag, text
        with pytest.raises(ValueError, match=REFUSED):
            unseal(secret, _flipped(LEGACY, at), SCOPE, 1)
    with pytest.raises(ValueError, match=REFUSED):
        unseal(SECRET, LEGACY, SCOPE, 1)


def test_a_response_stored_before_sealing_is_returned_as_it_is() -> None:
    assert unseal(SECRET, BODY, SCOPE, 7) == BODY


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
