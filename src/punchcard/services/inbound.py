"""Inbound events: verified on the raw bytes, stored once per event id, processed later.

Receiving only verifies, deduplicates and stores, so the source gets its 2xx at once.
The worker then applies each event as one use case. An event that arrives before its
order (a refund before the order it refunds) is tried again with backoff until the
order exists; an event that can never apply is kept as `failed` with the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from punchcard import names, strict_json
from punchcard.errors import InvalidInput, InvalidState, NotFound, PunchcardError
from punchcard.inbound import MAPPINGS
from punchcard.services import orders
from punchcard.services.clock import Clock, environment_now
from punchcard.store.tables import inbound_events, inbound_sources
from punchcard.store.uow import UnitOfWork

TOLERANCE = timedelta(minutes=5)  # between the signature's timestamp and our clock
MAX_ATTEMPTS = 13  # waits of 1, 2, 4 ... 2048 s: about 68 minutes for the order to catch up
BATCH = 100


class BadSignature(Exception):
    """Signature or timestamp wrong: the request is refused and nothing is stored."""


def create_source(conn: sa.Connection, env_id: str, mapping: str, now: datetime) -> dict[str, str]:
    if mapping not in MAPPINGS:
        raise InvalidInput(f"mapping: one of {', '.join(MAPPINGS)}")
    source_id = f"src_{uuid.uuid4().hex[:20]}"
    secret = secrets.token_urlsafe(32)
    conn.execute(
        sa.insert(inbound_sources).values(
            id=source_id, env_id=env_id, mapping=mapping, secret=secret, created_at=now
        )
    )
    return {
        "id": source_id,
        "mapping": mapping,
        "secret": secret,
        "url": f"/v1/inbound/{source_id}",
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of `{timestamp}.{raw body}` with the source's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def receive(
    engine: sa.Engine, source_id: str, body: bytes, headers: dict[str, str], now: datetime
) -> bool:
    """Verify, deduplicate and store an event. True when new, False for a duplicate.

    The timestamp is judged before the source is looked up, so a stale request is answered
    alike whether or not its source exists."""
    stamp = headers.get("x-punchcard-timestamp", "")
    given = headers.get("x-punchcard-signature", "")
    fresh = stamp.isascii() and stamp.isdigit() and len(stamp) <= 12  # never int() 5,000 digits
    if not fresh or abs(now.timestamp() - int(stamp)) > TOLERANCE.total_seconds():
        raise BadSignature("timestamp missing or outside the 5-minute tolerance")
    with engine.begin() as conn:
        source = conn.execute(
            sa.select(inbound_sources).where(inbound_sources.c.id == source_id)
        ).first()
        if source is None:
            raise BadSignature("unknown source")
        if not hmac.compare_digest(given, signature(source.secret, stamp, body)):
            raise BadSignature("signature does not match")
        try:  # the API's own check of a body's text: UTF-8, keys once, no lone surrogate
            event = names.normalised(strict_json.read(body))
        except strict_json.BadBody as bad:
            raise InvalidInput(str(bad)) from bad
        # Only the order's parts are read: a platform's own fields are its business.
        parts = {k: event[k] for k in ("order", "refund") if isinstance(event, dict) and k in event}
        where = strict_json.inexact_number(parts)
        if where is not None:
            raise InvalidInput(f"body.{where}: a number a binary float can not hold exactly")
        where, wrong = _refused_text(parts)
        if wrong is not None:
            raise InvalidInput(f"body.{where}: {wrong}")
        event_id = MAPPINGS[source.mapping].event_id(event)
        dialect = conn.dialect.name
        insert = (
            sa.dialects.postgresql.insert if dialect == "postgresql" else sa.dialects.sqlite.insert
        )(inbound_events)
        stored = conn.execute(
            insert.values(
                source_id=source_id,
                event_id=event_id,
                body=body.decode(),
                state="pending",
                attempts=0,
                next_attempt_at=now,
                received_at=now,
            )
            .on_conflict_do_nothing()
            .returning(
                inbound_events.c.id
            )  # no row back: a duplicate (rowcount is not reliable here)
        ).first()
        return stored is not None


def _refused_text(parts: dict[str, Any]) -> tuple[str, str | None]:
    """The first text in an event's order parts that holds a character no id may hold, and
    what it is. Every text there is an id, a sku, a category, a tender type, an amount or a
    time: none has a use for a control, invisible or bidi character (names.py)."""
    for path, item in strict_json.walk(parts):
        wrong = names.problem(item) if isinstance(item, str) else None
        if wrong is not None:
            return path, wrong
    return "", None


def process_due(engine: sa.Engine, clock: Clock) -> int:
    """Apply inbound events that are due, each in its own transaction with its effect."""
    now = clock.now()
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(inbound_events.c.id)
            .where(inbound_events.c.state == "pending", inbound_events.c.next_attempt_at <= now)
            .order_by(inbound_events.c.received_at, inbound_events.c.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        ids = [r.id for r in rows]
        if ids:  # a short lease so another worker does not take them meanwhile
            conn.execute(
                sa.update(inbound_events)
                .where(inbound_events.c.id.in_(ids))
                .values(next_attempt_at=now + timedelta(seconds=60))
            )
    for event_id in ids:
        _apply(engine, event_id, clock)
    return len(ids)


_PENDING_LOCKED = (
    sa.select(inbound_events.c.id)
    .where(inbound_events.c.id == sa.bindparam("b_id"), inbound_events.c.state == "pending")
    .with_for_update()
)


def _apply(engine: sa.Engine, event_pk: int, clock: Clock) -> None:
    """Apply one event. Whatever happens, the event ends done, failed, or waiting: an event
    that can not be applied must never stop the worker."""
    seen = None  # the attempts counted when this worker read the event
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(inbound_events, inbound_sources.c.env_id, inbound_sources.c.mapping)
                .join(inbound_sources, inbound_sources.c.id == inbound_events.c.source_id)
                .where(inbound_events.c.id == event_pk)
            ).one()
            if row.state != "pending":
                return
            seen = int(row.attempts)
            now = environment_now(conn, row.env_id, clock)
        operation = MAPPINGS[row.mapping].operation(names.normalised(json.loads(row.body)))
        with UnitOfWork(engine, row.env_id) as uow:
            # Still pending, under its lock, in the transaction that applies it: a second
            # worker whose claim overlapped this one (a batch outlived its lease) waits here,
            # then finds it done and leaves it.
            if uow.conn.execute(_PENDING_LOCKED, {"b_id": event_pk}).first() is None:
                return
            _USE_CASES[operation.kind](uow, operation.data, now)
            _settle(uow.conn, event_pk, "done", f"applied: {operation.kind}")
            uow.commit()
    except (NotFound, InvalidState) as exc:
        # Out of order: the order does not exist yet, or is not yet in the state the event
        # needs (a refund before its close). Wait for it, doubling the pause.
        assert seen is not None  # raised by the use case, so the event was read
        _wait_or_fail(engine, event_pk, clock, f"{exc.code}: {exc.message}", seen)
    except PunchcardError as exc:
        _fail(engine, event_pk, f"{exc.code}: {exc.message}")
    except sa.exc.OperationalError as exc:
        # The database, not the event: a lost deadlock, a restart, a dropped connection.
        # Nothing was applied; try again later (if the database can not even count this
        # try, the worker's round fails and the event is found pending next round).
        if seen is None:
            raise
        reason = f"database: {type(exc.orig).__name__}"
        _wait_or_fail(engine, event_pk, clock, reason, seen)
    except Exception as exc:  # not a domain error: a bug or an impossible value; keep the reason
        _fail(engine, event_pk, f"error: {type(exc).__name__}: {exc}")


def _wait_or_fail(engine: sa.Engine, event_pk: int, clock: Clock, reason: str, seen: int) -> None:
    """Count this attempt and plan the next, unless another worker whose claim overlapped
    this one's counted it first: the count moves only from what this worker read (`seen`),
    so one failed try is one attempt, and the doubling pause skips no step."""
    attempts = seen + 1
    with engine.begin() as conn:
        if attempts >= MAX_ATTEMPTS:
            _settle(conn, event_pk, "failed", reason, attempts)
            return
        conn.execute(
            sa.update(inbound_events)
            .where(
                inbound_events.c.id == event_pk,
                inbound_events.c.state == "pending",
                inbound_events.c.attempts == seen,
            )
            .values(
                attempts=attempts,
                next_attempt_at=clock.now() + timedelta(seconds=2 ** (attempts - 1)),
                outcome=f"waiting: {reason}"[:500],
            )
        )


def _fail(engine: sa.Engine, event_pk: int, reason: str) -> None:
    with engine.begin() as conn:
        attempts = conn.execute(
            sa.select(inbound_events.c.attempts).where(inbound_events.c.id == event_pk)
        ).scalar_one()
        _settle(conn, event_pk, "failed", reason, attempts + 1)


def _settle(
    conn: sa.Connection, event_pk: int, state: str, outcome: str, attempts: int | None = None
) -> None:
    values: dict[str, Any] = {"state": state, "outcome": outcome[:500]}
    if attempts is not None:
        values["attempts"] = attempts
    conn.execute(  # only a pending event is settled: what another worker settled stays
        sa.update(inbound_events)
        .where(inbound_events.c.id == event_pk, inbound_events.c.state == "pending")
        .values(**values)
    )


_USE_CASES = {
    "place": orders.place,
    "close": orders.close,
    "edit": orders.edit,
    "refund": orders.refund,
    "void": orders.void,
}


def events(conn: sa.Connection, env_id: str, source_id: str) -> list[dict[str, Any]]:
    source = conn.execute(
        sa.select(inbound_sources.c.id).where(
            inbound_sources.c.id == source_id, inbound_sources.c.env_id == env_id
        )
    ).first()
    if source is None:
        raise NotFound(f"no inbound source {source_id!r}")
    rows = conn.execute(
        sa.select(inbound_events)
        .where(inbound_events.c.source_id == source_id)
        .order_by(inbound_events.c.id)
    ).all()
    return [
        {
            "event": r.event_id,
            "state": r.state,
            "attempts": r.attempts,
            "outcome": r.outcome,
            "received_at": r.received_at.isoformat(),
        }
        for r in rows
    ]
