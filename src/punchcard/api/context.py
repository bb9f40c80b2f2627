"""Per-request plumbing: who is calling, the environment's now, idempotency, consistency.

Idempotency: every POST/PUT/PATCH carries `Idempotency-Key`. A write (`write`) runs its use
case and inserts the key's row, holding the answer, in the use case's own transaction, once:
one commit, with no claim committed before it and no update after. The unique index on the
key decides between concurrent duplicates: the second to insert waits for the first to
commit, then finds the row, rolls its own effect back and replays the first answer (a
different request under the key gets 422). A crash anywhere rolls everything back, key
included, so a retry runs afresh. An expired key (72 hours) or a lapsed in-flight claim is
overwritten by the same insert. Keys are scoped to the environment and the API key.

Operations that run their own transactions (moving a sandbox clock: `idempotent`) still claim
the key first and commit at once (`in_flight`, with a lease so a crashed request frees it),
store their plan, run it, and store the answer.

One rule for invalid input, whichever layer refuses it (the body's schema, the guard, a use
case's InvalidInput): a 422 changes nothing and is not stored, so the key stays free and the
same key with a corrected body runs. Every other answer of the use case, success or problem
(404, 409, 402...), is stored with the key and replayed; a refusal of the HTTP layer's own
that lets a retry run (429, a busy sandbox) stores nothing.

At rest: a stored response can carry what is shown once (a gift card's PIN, a new sandbox's
API key), and a request's fingerprint covers its body (a PIN, an email). Both are keyed by a
secret derived from the caller's API key, which the database never holds (only its hash): the
response is sealed with AES-256-GCM (the `cryptography` package; the key drawn from that
secret by HKDF-SHA256, a random 96-bit nonce per seal, the key's scope (environment, API key,
Idempotency-Key) authenticated with it) and the fingerprint is an HMAC, so a copy of the
database yields neither the PIN nor a key, no guess can be checked against it, and an altered
or moved sealed row is refused, not replayed. Only the same API key, presenting the same
Idempotency-Key, gets the response back. Rows sealed by earlier schemes (v2, bound to the row
id; `SEALED_V1`, hand-made) are still opened, never written.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Request
from sqlalchemy.dialects import postgresql, sqlite
from starlette.responses import Response

from punchcard.api.problems import ApiProblem, from_domain
from punchcard.api.schemas import AFTER_LATEST, EARLIEST
from punchcard.errors import PunchcardError
from punchcard.services.clock import Clock
from punchcard.services.due import next_due
from punchcard.services.tenants import Principal, authenticate
from punchcard.store import hot
from punchcard.store.database import insert_new, lost_race, single_statement
from punchcard.store.errors import translate
from punchcard.store.tables import idempotency_keys
from punchcard.store.uow import UnitOfWork

IDEMPOTENCY_TTL = timedelta(hours=72)
# How long a request holds its key before a retry may take it over (a crashed server's
# requests hold theirs this long); a request that outlives it is fenced off by `_finish`.
IN_FLIGHT_LEASE = timedelta(seconds=float(os.environ.get("PUNCHCARD_IN_FLIGHT_LEASE_S", "60")))
MAX_WAIT_MS = 5000
RACE_RETRIES = 3  # runs again of a use case that lost a deadlock, before it fails
log = logging.getLogger("punchcard.api")
# Stored responses that start so are sealed (JSON never does): v3 by `seal`, bound to the
# key's scope; v2 (bound to the row id) and v1 (hand-made) are only opened now.
SEALED = b"\x00pc-sealed-v3\x00"
SEALED_V2 = b"\x00pc-sealed-v2\x00"
SEALED_V1 = b"\x00pc-sealed-v1\x00"
_SEAL_INFO = b"punchcard stored response v2"  # HKDF's purpose: v2 and v3 differ in what they bind


@dataclass
class Call:
    """One authenticated request: the caller, the database, the clock."""

    principal: Principal
    engine: sa.Engine
    clock: Clock
    request: Request
    body: bytes
    secret: bytes  # derived from the caller's API key: seals its stored responses
    wanted: tuple[datetime, int] | None = None  # a GET's consistency token's time, and wait_ms
    lease: datetime | None = None  # when the in-flight claim this request holds lapses
    key_scope: bytes = b""  # what its stored answer is bound to (`key_scope`), once read

    @property
    def env_id(self) -> str:
        return self.principal.env_id

    def now(self) -> datetime:
        """The environment's now: its sandbox clock as read with the key, or the system's."""
        return self.principal.env_clock or self.clock.now()

    def uow(self, *, read_only: bool = False) -> UnitOfWork:
        return UnitOfWork(self.engine, self.env_id, read_only=read_only)

    def require(self, scope: str) -> None:
        if not self.principal.allows(scope):
            raise ApiProblem(403, "forbidden", f"this key lacks the {scope} scope")


def authenticated(request: Request, engine: sa.Engine, clock: Clock, body: bytes) -> Call:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise ApiProblem(
            401,
            "unauthenticated",
            "send Authorization: Bearer <api key>",
            {"WWW-Authenticate": "Bearer"},
        )
    with single_statement(engine) as conn:
        principal = authenticate(conn, key.strip())
    if principal is None:
        raise ApiProblem(
            401, "unauthenticated", "unknown or revoked API key", {"WWW-Authenticate": "Bearer"}
        )
    return Call(principal, engine, clock, request, body, request_secret(key.strip()))


def request_secret(api_key: str) -> bytes:
    """A key for sealing a caller's stored responses, derivable only from its API key."""
    return hmac.new(api_key.encode(), b"punchcard idempotency v1", hashlib.sha256).digest()


@lru_cache(maxsize=256)
def _aead(secret: bytes) -> AESGCM:
    """AES-256-GCM under a key HKDF draws from the caller's secret for this one purpose."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO)
    return AESGCM(hkdf.derive(secret))


def key_scope(env_id: str, api_key_id: str, key: str) -> bytes:
    """What a sealed response is bound to: its row's unique key, each part length-prefixed."""
    parts = [part.encode() for part in (env_id, api_key_id, key)]
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def seal(secret: bytes, body: bytes, scope: bytes) -> bytes:
    """Encrypt and authenticate what is stored under an Idempotency-Key: a fresh random 96-bit
    nonce each time; the version and the key's scope (`key_scope`) are authenticated too, so
    a sealed response opens only under the key it was stored with (the row's id is not known
    before the row is inserted with it)."""
    nonce = os.urandom(12)
    return SEALED + nonce + _aead(secret).encrypt(nonce, body, SEALED + scope)


def unseal(secret: bytes, stored: bytes, scope: bytes, row_id: int) -> bytes:
    """What `seal` stored under that key (or v2 in that row); ValueError if it was altered,
    moved or is another API key's."""
    for prefix, bound in ((SEALED, SEALED + scope), (SEALED_V2, SEALED_V2 + b"%d" % row_id)):
        if stored.startswith(prefix):
            rest = stored[len(prefix) :]
            try:
                return _aead(secret).decrypt(rest[:12], rest[12:], bound)
            except InvalidTag as exc:
                raise ValueError("a stored response does not match its seal") from exc
    if stored.startswith(SEALED_V1):
        return _unseal_v1(secret, stored[len(SEALED_V1) :])
    if stored.startswith(b"{"):
        return stored  # stored before responses were sealed: JSON objects, all of them
    raise ValueError("a stored response is neither sealed nor JSON")


def _unseal_v1(secret: bytes, rest: bytes) -> bytes:
    """Legacy: opens rows sealed before v2 (a SHAKE-256 keystream XORed in by hand, an
    HMAC-SHA256 tag over nonce and text). Nothing is sealed this way any more; such rows
    live out their 72 hours."""
    nonce, tag, sealed = rest[:16], rest[16:48], rest[48:]
    stream_key = hmac.new(secret, b"stream" + nonce, hashlib.sha256).digest()
    mac_key = hmac.new(secret, b"mac" + nonce, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, hmac.new(mac_key, nonce + sealed, hashlib.sha256).digest()):
        raise ValueError("a stored response does not match its seal")
    stream = hashlib.shake_256(stream_key).digest(len(sealed))
    return (int.from_bytes(sealed, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(sealed), "big"
    )


def request_fingerprint(secret: bytes, method: str, path: str, query: str, body: bytes) -> str:
    """What a replay must match: method, path, query and body, under an HMAC keyed by the
    caller's secret (a plain hash of a body holding a 4-digit PIN is reversed by trying 10,000)."""
    digest = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (method.encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def consistency_token(env_id: str, at: datetime) -> str:
    raw = json.dumps({"e": env_id, "t": at.isoformat()}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_TOKEN = 512  # the tokens this API gives are about 120 characters
TOKEN_SKEW = timedelta(minutes=5)


def _token_time(call: Call, token: str) -> datetime:
    try:
        if len(token) > MAX_TOKEN:
            raise ValueError("too long")
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(raw, dict) or set(raw) != {"e", "t"}:
            raise ValueError("not the shape of a token")
        at = datetime.fromisoformat(raw["t"])
        env = raw["e"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ApiProblem(
            422, "invalid_input", "consistency_token is not a token this API gave"
        ) from exc
    if env != call.env_id:
        raise ApiProblem(422, "invalid_input", "consistency_token belongs to another environment")
    # Tokens are not secret, but none names a moment outside the years an environment's clock
    # keeps (one near year 1 or 9999 in a far offset overflows when made UTC), nor after its
    # environment's now (give or take the clock skew of servers behind one balancer): such a
    # token would only make its caller wait in vain.
    sane = at.tzinfo is not None and EARLIEST <= at < AFTER_LATEST
    if not sane or at > call.now() + TOKEN_SKEW:
        raise ApiProblem(422, "invalid_input", "consistency_token is not a token this API gave")
    return at.astimezone(UTC)


def consistency_wanted(call: Call) -> tuple[datetime, int] | None:
    """The write a read must include and how many ms it may wait for it, if it names one.
    Checked on every GET before the route runs, so a bad `wait_ms` is refused even alone."""
    params, headers = call.request.query_params, call.request.headers
    raw_wait = params.get("wait_ms", "0")
    digits = raw_wait.lstrip("0") or raw_wait[:1]  # "000" is 0; "" stays empty and is refused
    short = digits.isascii() and digits.isdigit() and len(digits) <= 4  # never int() 5,000 digits
    if not (short and int(digits) <= MAX_WAIT_MS):
        raise ApiProblem(
            422, "invalid_input", f"wait_ms is a whole number of milliseconds, 0 to {MAX_WAIT_MS}"
        )
    wait_ms = int(digits)
    token = params.get("consistency_token") or headers.get("consistency-token")
    return None if not token else (_token_time(call, token), wait_ms)


async def wait_consistent(call: Call) -> bool:
    """Wait (up to wait_ms) until due work has been done through the token's write; say if it was."""
    if call.wanted is None:
        return True
    wanted, wait_ms = call.wanted
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        # Exact, not a watermark: nothing due at or before the write's moment is still undone.
        with single_statement(call.engine) as conn:
            if next_due(conn, call.env_id, wanted) is None:
                return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


def _fingerprint(call: Call) -> str:
    request = call.request
    return request_fingerprint(
        call.secret, request.method, request.url.path, str(request.url.query), call.body
    )


def _replay(call: Call, row: Any) -> Response:
    scope = key_scope(row.env_id, row.api_key_id, row.key)
    body = unseal(call.secret, row.response, scope, row.id)
    headers = {"Idempotent-Replayed": "true"}
    if row.status_code < 400 and body:  # the header the first answer had, from its body
        answer = json.loads(body)
        token = answer.get("consistency_token") if isinstance(answer, dict) else None
        if isinstance(token, str):
            headers["Consistency-Token"] = token
    return Response(
        body,
        status_code=row.status_code,
        media_type="application/problem+json" if row.status_code >= 400 else "application/json",
        headers=headers,
    )


def _key_row(call: Call, key: str) -> Any:
    return (
        idempotency_keys.c.env_id == call.env_id,
        idempotency_keys.c.api_key_id == call.principal.key_id,
        idempotency_keys.c.key == key,
    )


def _new_key(call: Call, key: str, fingerprint: str, now: datetime) -> dict[str, Any]:
    return {
        "env_id": call.env_id,
        "api_key_id": call.principal.key_id,
        "key": key,
        "fingerprint": fingerprint,
        "state": "in_flight",
        "locked_until": now,
        "created_at": now,
        "expires_at": now + IDEMPOTENCY_TTL,
    }


# --- writes: the key and its answer inserted with the effect --------------------------------


@lru_cache(maxsize=2)
def _store_statement(dialect_name: str) -> Any:
    """INSERT the answered key; over an expired key, or a claim of the same request that
    lapsed (left by a server before this scheme), write instead. RETURNING says which: no row
    means the key is held, by an answer to replay or a request still running."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    insert = dialect.insert(idempotency_keys)
    new = insert.excluded
    held = idempotency_keys.c
    return insert.on_conflict_do_update(
        index_elements=[held.env_id, held.api_key_id, held.key],
        set_={
            name: new[name]
            for name in (
                "fingerprint",
                "state",
                "locked_until",
                "status_code",
                "response",
                "created_at",
                "expires_at",
            )
        },
        where=sa.or_(
            held.expires_at <= new.created_at,
            sa.and_(
                held.state == "in_flight",
                held.locked_until <= new.created_at,
                held.fingerprint == new.fingerprint,
            ),
        ),
    ).returning(held.id)


_INSERT_KEY = sa.insert(idempotency_keys)  # built once: its values are the parameters
# The unique constraint a second row under the same key breaks (its name holds the table's).
_KEY_CONSTRAINT = "idempotency_keys"


def _answered(call: Call, key: str, fingerprint: str, status: int, body: bytes) -> dict[str, Any]:
    """The key's row with its answer, sealed."""
    return {
        **_new_key(call, key, fingerprint, call.clock.now()),
        "state": "done",
        "status_code": status,
        "response": seal(call.secret, body, key_scope(call.env_id, call.principal.key_id, key)),
    }


def _store(
    call: Call, conn: sa.Connection, key: str, fingerprint: str, status: int, body: bytes
) -> bool:
    """Insert the key with its answer, once; False when the key is held (see `_held`)."""
    row = _answered(call, key, fingerprint, status, body)
    return hot.first(conn, _store_statement(conn.dialect.name), row) is not None


def _held(call: Call, key: str, fingerprint: str) -> Response | None:
    """What a key already held answers: the first request's answer replayed, 422 for another
    request under it, 409 while a request under it still runs; None if it is free (never
    used, expired, or purged since a look)."""
    with single_statement(call.engine) as conn:
        row = conn.execute(sa.select(idempotency_keys).where(*_key_row(call, key))).first()
    now = call.clock.now()
    if row is None or row.expires_at <= now:
        return None
    if row.fingerprint != fingerprint:
        raise _reused()
    if row.state == "done":
        return _replay(call, row)
    if row.locked_until <= now:
        return None  # a lapsed claim of this same request: the insert takes it over
    raise _in_flight()


def write(
    call: Call,
    use_case: Callable[[UnitOfWork, datetime], Any],
    render: Callable[[Any, UnitOfWork, datetime], dict[str, Any]],
    status: int = 200,
    admit: Callable[[], None] | None = None,
) -> Response:
    """Run a mutating use case once per Idempotency-Key; its answer commits with its effect.

    `admit` runs first, only for a request that will run (not a replay: so such a request
    looks its key up first), outside the use case's transaction; an ApiProblem it raises (a
    rate limit) is the answer and stores nothing. A use case that lost a deadlock (two
    members' requests each waiting on a row the other holds) was rolled back whole and runs
    again, up to RACE_RETRIES times, before its error is the answer.

    The key's row goes with the COMMIT, a plain INSERT: a key already there fails the
    transaction, which then answers as the key says (`_held`). Only a key that is there but
    free (expired, or a lapsed claim of this request) makes the next run take it over with
    `_store`, whose answer must come back before the COMMIT: a round trip more."""
    key = _idempotency_key(call)
    fingerprint = _fingerprint(call)
    if admit is not None:
        held = _held(call, key, fingerprint)
        if held is not None:
            return held
        admit()
    takeover = False
    for attempt in range(RACE_RETRIES + 1):
        try:
            answer = _attempt(call, key, fingerprint, use_case, render, status, takeover)
        except sa.exc.OperationalError as error:
            if not lost_race(error) or attempt == RACE_RETRIES:
                raise
            log.info("a request lost a deadlock to another; running it again")
            continue
        if answer is not None:
            return answer
        takeover = True
    raise _in_flight()  # the key came and went under every attempt: let the caller retry


def _attempt(
    call: Call,
    key: str,
    fingerprint: str,
    use_case: Callable[[UnitOfWork, datetime], Any],
    render: Callable[[Any, UnitOfWork, datetime], dict[str, Any]],
    status: int,
    takeover: bool,
) -> Response | None:
    """One run: the answer, or None if the key is there but free (see `write`)."""
    now = call.now()
    try:
        with call.uow() as uow:
            payload = render(use_case(uow, now), uow, now)
            token = consistency_token(call.env_id, now)
            body = json.dumps(
                {**payload, "consistency_token": token}, separators=(",", ":")
            ).encode()
            if takeover:
                stored = _store(call, uow.conn, key, fingerprint, status, body)
            else:
                hot.later(uow.conn, _INSERT_KEY, _answered(call, key, fingerprint, status, body))
                stored = True
            if stored:
                uow.commit()
    except PunchcardError as error:
        return _answer_error(call, key, fingerprint, error)
    except sa.exc.IntegrityError as error:
        if not takeover and _KEY_CONSTRAINT in str(error.orig):
            return _held(call, key, fingerprint)  # None: free, taken over by the next run
        domain = translate(error)
        if domain is None:
            raise
        return _answer_error(call, key, fingerprint, domain)
    if not stored:  # a duplicate answered first: this run's effect rolled back with the block
        return _held(call, key, fingerprint)
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"Consistency-Token": token},
    )


def _answer_error(call: Call, key: str, fingerprint: str, error: PunchcardError) -> Response | None:
    """The effect rolled back, but the answer is still the answer: store it under the key,
    unless the key is held (a retry of an answered request answers as the first did). Invalid
    input (422) is not stored, so the key stays free for the corrected request."""
    code, problem = from_domain(error)
    if code == 422:
        held = _held(call, key, fingerprint)
        return held or Response(problem, status_code=code, media_type="application/problem+json")
    with call.engine.connect() as conn:
        stored = _store(call, conn, key, fingerprint, code, problem)
        if stored:
            conn.commit()
    if not stored:
        return _held(call, key, fingerprint)
    return Response(problem, status_code=code, media_type="application/problem+json")


# --- operations that run their own transactions: claim, plan, run, answer --------------------


def _claim_statement(conn: sa.Connection) -> Any:
    return insert_new(conn, idempotency_keys, idempotency_keys.c.id)


def _claim(call: Call, key: str, fingerprint: str) -> Response | int:
    """Claim the key (returns its row id), or answer now: replay, 409 or 422."""
    now = call.clock.now()
    call.lease = now + IN_FLIGHT_LEASE
    new_key = {**_new_key(call, key, fingerprint, now), "locked_until": call.lease}
    with single_statement(call.engine, write=True) as conn:  # a new key: the usual case
        claimed = conn.execute(_claim_statement(conn), new_key).scalar()
    if claimed is not None:
        return int(claimed)
    for _ in range(3):
        with call.engine.begin() as conn:
            claimed = conn.execute(_claim_statement(conn), new_key).scalar()
            if claimed is not None:
                return int(claimed)
            row = conn.execute(
                sa.select(idempotency_keys).where(*_key_row(call, key)).with_for_update()
            ).first()
            if row is None:
                continue  # purged between the two statements: claim it again
            if row.expires_at <= now:
                conn.execute(sa.delete(idempotency_keys).where(idempotency_keys.c.id == row.id))
                continue  # an expired key is a new key: the deletion commits, then claim it
            if row.fingerprint != fingerprint:
                raise _reused()
            if row.state == "done":
                return _replay(call, row)
            if row.locked_until > now:
                raise _in_flight()
            call.lease = now + IN_FLIGHT_LEASE
            conn.execute(  # the first request died: take its claim over
                sa.update(idempotency_keys)
                .where(idempotency_keys.c.id == row.id)
                .values(locked_until=call.lease)
            )
            return int(row.id)
    raise _in_flight()


class Superseded(Exception):
    """Another request under the same key (one that took over a lapsed claim) answered first."""


_FINISH = sa.update(idempotency_keys).where(
    idempotency_keys.c.id == sa.bindparam("b_id"), idempotency_keys.c.state == "in_flight"
)


def _finish(call: Call, conn: sa.Connection, claim_id: int, status: int, body: bytes) -> None:
    """Store the answer, only if the key is still unanswered: a request whose claim lapsed and
    was taken over must not apply its effect too (it rolls back and replays the answer)."""
    stored = conn.execute(
        _FINISH,
        {
            "b_id": claim_id,
            "state": "done",
            "status_code": status,
            "response": seal(call.secret, body, call.key_scope),
        },
    ).rowcount
    if stored != 1:
        raise Superseded


def _idempotency_key(call: Call) -> str:
    key = call.request.headers.get("idempotency-key")
    if not key:
        raise ApiProblem(
            400,
            "idempotency_key_missing",
            "every POST, PUT and PATCH needs an Idempotency-Key header",
        )
    if len(key) > 255:
        raise ApiProblem(
            400, "idempotency_key_too_long", "an Idempotency-Key is at most 255 characters"
        )
    if len(call.request.headers.getlist("idempotency-key")) > 1:
        # Which one counts would be a guess (as for a JSON key given twice).
        raise ApiProblem(
            400, "idempotency_key_given_twice", "give one Idempotency-Key header, not several"
        )
    call.key_scope = key_scope(call.env_id, call.principal.key_id, key)
    return key


def _answer_claimed_error(call: Call, claimed: int, error: PunchcardError) -> Response:
    """As `_answer_error`, for a claimed key: store the answer, or drop the claim for a 422."""
    code, problem = from_domain(error)
    if code == 422:
        _release(call, claimed, keep_plan=False)
    else:
        with call.engine.begin() as conn:
            _finish(call, conn, claimed, code, problem)
    return Response(problem, status_code=code, media_type="application/problem+json")


def _replay_stored(call: Call, claimed: int) -> Response:
    """The answer another request under this key stored; while it has none yet (it is still
    running, or failed and left its plan for a retry), the key is in flight."""
    with call.engine.connect() as conn:
        row = conn.execute(
            sa.select(idempotency_keys).where(idempotency_keys.c.id == claimed)
        ).first()
    if row is None or row.state != "done":
        raise _in_flight()
    return _replay(call, row)


def _reused() -> ApiProblem:
    return ApiProblem(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was used with another method, path or body",
    )


def _in_flight() -> ApiProblem:
    return ApiProblem(
        409,
        "idempotency_key_in_flight",
        "a request with this Idempotency-Key is still running",
        {"Retry-After": "1"},
    )


def _release(call: Call, claimed: int, *, keep_plan: bool = True) -> None:
    """Nothing was answered (a crash, a busy sandbox): let a retry run it again. A key that
    holds a plan keeps it, its claim lapsed at once, so the retry carries out that same plan;
    any other key is forgotten, and so is every key refused as invalid input
    (`keep_plan=False`: a corrected body is another request, which that plan is not). Only
    this request's own claim: one whose lease lapsed and was taken over by a retry still
    running is left to that retry."""
    mine = (
        idempotency_keys.c.id == claimed,
        idempotency_keys.c.locked_until == call.lease,
        idempotency_keys.c.state == "in_flight",
    )
    planless = (idempotency_keys.c.response.is_(None),) if keep_plan else ()
    with call.engine.begin() as conn:
        conn.execute(sa.delete(idempotency_keys).where(*mine, *planless))
        if keep_plan:
            conn.execute(
                sa.update(idempotency_keys).where(*mine).values(locked_until=call.clock.now())
            )


def _run_claimed(call: Call, claimed: int, work: Callable[[], Response]) -> Response:
    """Run work under a claimed key: a domain error (or a same-id race the database decided)
    is the answer and is stored, unless it is invalid input; anything else frees the key so a
    retry runs it again (a 422 from the HTTP layer frees it whole, plan and all)."""
    try:
        return work()
    except Superseded:
        return _replay_stored(call, claimed)
    except PunchcardError as error:
        try:
            return _answer_claimed_error(call, claimed, error)
        except Superseded:
            return _replay_stored(call, claimed)
    except sa.exc.IntegrityError as error:
        domain = translate(error)
        if domain is None:
            _release(call, claimed)
            raise
        return _answer_claimed_error(call, claimed, domain)
    except BaseException as error:
        invalid = isinstance(error, ApiProblem) and error.status == 422
        _release(call, claimed, keep_plan=not invalid)
        raise


def _stored_plan(call: Call, claimed: int) -> dict[str, Any] | None:
    """The plan a request under this key stored before it died, if any (while a key is in
    flight its response column holds the plan, sealed like an answer)."""
    with single_statement(call.engine) as conn:
        stored = conn.execute(
            sa.select(idempotency_keys.c.response).where(
                idempotency_keys.c.id == claimed, idempotency_keys.c.state == "in_flight"
            )
        ).scalar()
    return (
        None
        if stored is None
        else dict(json.loads(unseal(call.secret, stored, call.key_scope, claimed)))
    )


def _store_plan(call: Call, claimed: int, plan: dict[str, Any]) -> None:
    with call.engine.begin() as conn:
        stored = conn.execute(
            sa.update(idempotency_keys)
            .where(idempotency_keys.c.id == claimed, idempotency_keys.c.state == "in_flight")
            .values(response=seal(call.secret, json.dumps(plan).encode(), call.key_scope))
        ).rowcount
    if stored != 1:
        raise Superseded


def idempotent(
    call: Call,
    plan: Callable[[], dict[str, Any]],
    run: Callable[[dict[str, Any], bool], tuple[int, dict[str, Any]]],
    holding: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> Response:
    """For operations that run their own transactions (moving a sandbox clock): claim the key,
    fix the plan and store it under the key, run it, store the answer.

    The plan is what the request means, resolved against the state it is about to change
    ("advance 1 day" becomes "move to" a time). Running a plan twice changes nothing more, so
    a retry after a crash carries out the stored plan again, not a plan made anew (`run` is
    told so: what the plan asked may have been done, or overtaken, since). `holding`
    is held while the plan is made and run (a sandbox's lease): two requests with different
    keys then resolve their plans one after the other, never against the same state."""
    claimed = _claim(call, _idempotency_key(call), _fingerprint(call))
    if isinstance(claimed, Response):
        return claimed

    def work() -> Response:
        with holding():
            fixed = _stored_plan(call, claimed)
            resumed = fixed is not None
            if fixed is None:
                fixed = plan()
                _store_plan(call, claimed, fixed)
            status, payload = run(fixed, resumed)
        body = json.dumps(payload, separators=(",", ":")).encode()
        with call.engine.begin() as conn:
            _finish(call, conn, claimed, status, body)
        token = payload.get("consistency_token")
        headers = {"Consistency-Token": token} if token else None
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    return _run_claimed(call, claimed, work)
