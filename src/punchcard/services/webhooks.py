"""Outbound webhooks: endpoints, their secrets, and the outbox read as messages.

Every committed event is in the outbox (written in its change's transaction), and that row
is the message: its `webhook-id` is `msg_<outbox id>` and its body is built from the row,
the same bytes every time. Each endpoint keeps a cursor, the (tx, id) of the last event
sent to it; `worker/delivery.py` sends what follows and moves it once a batch. Message,
delivery and attempt rows are made only for a failure, a resend or a dead letter.
Message bodies carry the member's sequence number so a receiver can order them.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from punchcard.errors import InvalidInput, NotFound
from punchcard.services.addresses import is_public, resolve
from punchcard.store.database import insert_new
from punchcard.store.tables import (
    CurrentTx,
    members,
    outbox,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_messages,
)

EVENT_TYPES = (
    "member.enrolled",
    "order.evaluated",
    "order.refunded",
    "order.voided",
    "points.pending",
    "points.posted",
    "points.reversed",
    "points.expired",
    "points.transferred",
    "tier.changed",
    "reward.issued",
    "reward.redeemed",
    "reward.reserved",
    "reward.used",
    "reward.released",
    "reward.expired",
    "punch_card.progressed",
    "gift_card.changed",
    "gift_card.transferred",
    "program.published",
    "program.activated",
)
OLD_SECRET_GRACE = timedelta(hours=24)  # after a rotation, the old secret still signs this long
MESSAGE_PREFIX = "msg_"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def check_url(url: Any, *, allow_private: bool) -> str:
    """Only http(s); unless allowed (sandboxes, tests), never loopback or private addresses.

    The worker checks again, at each connection it makes (`worker/egress.py`)."""
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidInput("url: an http(s) URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"url: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url: only http and https URLs with a host")
    if allow_private:
        return url
    try:
        found = resolve(parts.hostname, port or 443)
    except (OSError, UnicodeError) as exc:
        raise InvalidInput(f"url: {parts.hostname} does not resolve") from exc
    if not all(is_public(address) for address in found):
        raise InvalidInput(f"url: {parts.hostname} is a loopback or private address")
    return url


def _types(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput("event_types: a list of event types")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(
            f"event_types: unknown {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
        )
    return sorted(set(value))


def create_endpoint(
    conn: sa.Connection, env_id: str, data: Mapping[str, Any], now: datetime, *, allow_private: bool
) -> dict[str, Any]:
    url = check_url(data.get("url"), allow_private=allow_private)
    endpoint_id = f"ep_{uuid.uuid4().hex[:20]}"
    secret = new_secret()
    tx, last = _position(conn, env_id)
    conn.execute(
        sa.insert(webhook_endpoints).values(
            id=endpoint_id,
            env_id=env_id,
            url=url,
            event_types=_types(data.get("event_types")),
            secrets=[{"secret": secret, "expires_at": None}],
            state="enabled",
            created_at=now,
            cursor_tx=tx,
            cursor_id=last,
            start_tx=tx,
            start_id=last,
        )
    )
    return {**view(endpoint_row(conn, env_id, endpoint_id), now), "secret": secret}


def _position(conn: sa.Connection, env_id: str) -> tuple[int, int]:
    """Where a new endpoint starts: after every event committed before it. On PostgreSQL,
    the events of later transactions (tx above this one's); on SQLite, whose writers take
    turns, those after the last id."""
    if conn.dialect.name == "postgresql":
        return int(conn.execute(sa.select(CurrentTx())).scalar_one()), 0
    last = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(outbox.c.id), 0)).where(outbox.c.env_id == env_id)
    ).scalar_one()
    return 0, int(last)


def endpoint_row(conn: sa.Connection, env_id: str, endpoint_id: str, *, lock: bool = False) -> Any:
    """The endpoint; with `lock`, under its row lock, for a change computed from what it holds."""
    query = sa.select(webhook_endpoints).where(
        webhook_endpoints.c.env_id == env_id,
        webhook_endpoints.c.id == endpoint_id,
        webhook_endpoints.c.deleted_at.is_(None),
    )
    # FOR NO KEY UPDATE: fan-out's inserts that refer to the endpoint are not held up
    row = conn.execute(query.with_for_update(key_share=True) if lock else query).first()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    return row


def view(row: Any, now: datetime) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "event_types": row.event_types,
        "state": row.state,
        "disabled_reason": row.disabled_reason,
        "failing_since": None if row.failing_since is None else row.failing_since.isoformat(),
        "secrets": len(signing_secrets(row, now)),
    }


def list_endpoints(conn: sa.Connection, env_id: str, now: datetime) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(webhook_endpoints)
        .where(webhook_endpoints.c.env_id == env_id, webhook_endpoints.c.deleted_at.is_(None))
        .order_by(webhook_endpoints.c.created_at)
    ).all()
    return [view(row, now) for row in rows]


def update_endpoint(
    conn: sa.Connection,
    env_id: str,
    endpoint_id: str,
    data: Mapping[str, Any],
    now: datetime,
    *,
    allow_private: bool,
) -> dict[str, Any]:
    endpoint_row(conn, env_id, endpoint_id)
    values: dict[str, Any] = {}
    if data.get("url") is not None:
        values["url"] = check_url(data["url"], allow_private=allow_private)
    if data.get("event_types") is not None:
        values["event_types"] = _types(data["event_types"])
    if data.get("enabled") is not None:
        enabled = bool(data["enabled"])
        values.update(
            state="enabled" if enabled else "disabled",
            disabled_reason=None if enabled else "disabled by the API",
            failing_since=None,
        )
    if values:
        conn.execute(
            sa.update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(**values)
        )
    return view(endpoint_row(conn, env_id, endpoint_id), now)


def delete_endpoint(conn: sa.Connection, env_id: str, endpoint_id: str, now: datetime) -> None:
    """A deleted endpoint gets nothing more: what still waited for it is dropped."""
    endpoint_row(conn, env_id, endpoint_id)
    conn.execute(
        sa.update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(deleted_at=now, state="disabled", disabled_reason="deleted")
    )
    conn.execute(
        sa.update(webhook_deliveries)
        .where(
            webhook_deliveries.c.endpoint_id == endpoint_id,
            webhook_deliveries.c.state == "pending",
        )
        .values(state="dropped", next_attempt_at=None)
    )


def rotate_secret(
    conn: sa.Connection, env_id: str, endpoint_id: str, now: datetime
) -> dict[str, Any]:
    """A new secret signs from now; the previous one also signs for 24 hours (two valid secrets)."""
    row = endpoint_row(conn, env_id, endpoint_id, lock=True)  # two rotations: neither lost
    secret = new_secret()
    kept = [
        {
            "secret": s["secret"],
            "expires_at": s["expires_at"] or (now + OLD_SECRET_GRACE).isoformat(),
        }
        for s in signing_secrets(row, now)[:1]
    ]
    conn.execute(
        sa.update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(secrets=[{"secret": secret, "expires_at": None}, *kept])
    )
    return {**view(endpoint_row(conn, env_id, endpoint_id), now), "secret": secret}


def signing_secrets(row: Any, now: datetime) -> list[dict[str, Any]]:
    return [
        s
        for s in row.secrets
        if s["expires_at"] is None or datetime.fromisoformat(s["expires_at"]) > now
    ]


def message_id(outbox_id: int) -> str:
    """The `webhook-id` of an event: fixed by its outbox row, so a resend carries the same."""
    return f"{MESSAGE_PREFIX}{outbox_id}"


def message_body(row: Any) -> str:
    """The exact JSON signed and sent for an outbox row (read with its member's `member_ref`)."""
    data = {**row.payload}
    if row.member_ref is not None:
        data.update(member=row.member_ref, member_seq=row.member_seq)
    return json.dumps(
        {"type": row.type, "timestamp": row.created_at.isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )


class Horizon(sa.sql.expression.FunctionElement[int]):
    """Events below this `tx` are of finished transactions: the oldest transaction still
    running on PostgreSQL (its snapshot's xmin); on SQLite every row read is committed."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(Horizon)
def _horizon(element: Horizon, compiler: Any, **kw: Any) -> str:
    return "1"


@compiles(Horizon, "postgresql")
def _horizon_pg(element: Horizon, compiler: Any, **kw: Any) -> str:
    return "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"


def after(tx: Any, outbox_id: Any, cursor_tx: Any, cursor_id: Any) -> sa.ColumnElement[bool]:
    """(tx, id) > (cursor_tx, cursor_id): a row comparison both databases read as a range
    of the (env_id, tx, id) index."""
    return sa.tuple_(tx, outbox_id) > sa.tuple_(cursor_tx, cursor_id)


_EVENT = sa.select(
    outbox.c.id,
    outbox.c.tx,
    outbox.c.type,
    outbox.c.payload,
    outbox.c.created_at,
    outbox.c.member_seq,
    members.c.external_id.label("member_ref"),
    webhook_messages.c.id.label("message_id"),  # made before 0014, or for a failure
    webhook_messages.c.body,
).select_from(
    outbox.outerjoin(members, members.c.id == outbox.c.member_id).outerjoin(
        webhook_messages, webhook_messages.c.outbox_id == outbox.c.id
    )
)
# An endpoint's next events: after its cursor, of finished transactions, in (tx, id) order.
EVENTS = (
    _EVENT.where(
        outbox.c.env_id == sa.bindparam("env"),
        after(outbox.c.tx, outbox.c.id, sa.bindparam("tx"), sa.bindparam("last")),
        outbox.c.tx < Horizon(),
    )
    .order_by(outbox.c.tx, outbox.c.id)
    .limit(sa.bindparam("limit"))
)


def the_message(event: Any) -> tuple[str, str]:
    """An event's `webhook-id` and body: those of its message row when it has one."""
    if event.message_id is not None:
        return str(event.message_id), str(event.body)
    return message_id(event.id), message_body(event)


def make_messages(conn: sa.Connection, env_id: str, events: list[Any], now: datetime) -> None:
    """Message rows for events that have none yet, once each: a failure, a resend."""
    rows = []
    for event in events:
        if event.message_id is None:
            message, body = the_message(event)
            rows.append(
                {
                    "id": message,
                    "env_id": env_id,
                    "outbox_id": event.id,
                    "type": event.type,
                    "body": body,
                    "created_at": now,
                }
            )
    if rows:
        conn.execute(insert_new(conn, webhook_messages), rows)


def _event(conn: sa.Connection, env_id: str, message: str) -> Any:
    """The event a message id names: its message row's, else `msg_<outbox id>`'s."""
    made = conn.execute(
        sa.select(webhook_messages.c.outbox_id).where(
            webhook_messages.c.env_id == env_id, webhook_messages.c.id == message
        )
    ).scalar()
    number = message.removeprefix(MESSAGE_PREFIX)
    named = message.startswith(MESSAGE_PREFIX) and number.isascii() and number.isdigit()
    if made is None and named and len(number) <= 18:
        made = int(number)
    event = None
    if made is not None:
        event = conn.execute(_EVENT.where(outbox.c.env_id == env_id, outbox.c.id == made)).first()
    if event is None:
        raise NotFound(f"no webhook message {message!r}")
    return event


def resend(conn: sa.Connection, env_id: str, message: str, now: datetime) -> int:
    """Send one message again to every endpoint it went to (or was meant for) that is not
    deleted; a disabled one gets it when enabled. `now` is the server's clock, the one the
    deliverer schedules by (not a sandbox's)."""
    event = _event(conn, env_id, message)
    make_messages(conn, env_id, [event], now)
    message, _body = the_message(event)
    had = set(
        conn.execute(
            sa.select(webhook_deliveries.c.endpoint_id).where(
                webhook_deliveries.c.message_id == message
            )
        ).scalars()
    )
    endpoints = conn.execute(
        sa.select(
            webhook_endpoints.c.id,
            webhook_endpoints.c.event_types,
            webhook_endpoints.c.start_tx,
            webhook_endpoints.c.start_id,
        ).where(webhook_endpoints.c.env_id == env_id, webhook_endpoints.c.deleted_at.is_(None))
    ).all()
    meant = [  # it went to those with a delivery, or was meant for those begun before it
        e.id
        for e in endpoints
        if e.id in had
        or (
            (not e.event_types or event.type in e.event_types)
            and (event.tx, event.id) > (e.start_tx, e.start_id)
        )
    ]
    again = [e for e in meant if e in had]
    if again:
        conn.execute(
            sa.update(webhook_deliveries)
            .where(
                webhook_deliveries.c.message_id == message,
                webhook_deliveries.c.endpoint_id.in_(again),
            )
            .values(state="pending", attempts=0, next_attempt_at=now, dead_at=None)
        )
    new = [
        {"message_id": message, "endpoint_id": e, "state": "pending", "next_attempt_at": now}
        for e in meant
        if e not in had
    ]
    if new:
        conn.execute(insert_new(conn, webhook_deliveries), new)
    return len(meant)


def recover(
    conn: sa.Connection, env_id: str, endpoint_id: str, since: datetime, now: datetime
) -> int:
    """Send again every message to this endpoint that was dead-lettered since `since`
    (judged by when it died, not when it was made, some 27 hours before); `now` is the
    server's clock, as for `resend`."""
    endpoint_row(conn, env_id, endpoint_id)
    failed = sa.select(webhook_deliveries.c.id).where(
        webhook_deliveries.c.endpoint_id == endpoint_id,
        webhook_deliveries.c.state == "dead",
        webhook_deliveries.c.dead_at >= since,
    )
    ids = [r.id for r in conn.execute(failed).all()]
    if ids:
        conn.execute(
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.id.in_(ids))
            .values(state="pending", attempts=0, next_attempt_at=now, dead_at=None)
        )
    return len(ids)


def dead_letters(conn: sa.Connection, env_id: str, endpoint_id: str) -> list[dict[str, Any]]:
    endpoint_row(conn, env_id, endpoint_id)
    rows = conn.execute(
        sa.select(
            webhook_messages.c.id,
            webhook_messages.c.type,
            webhook_deliveries.c.attempts,
            webhook_deliveries.c.dead_at,
        )
        .join(webhook_messages, webhook_messages.c.id == webhook_deliveries.c.message_id)
        .where(
            webhook_deliveries.c.endpoint_id == endpoint_id, webhook_deliveries.c.state == "dead"
        )
        .order_by(webhook_deliveries.c.id)
    ).all()
    return [
        {"message": r.id, "type": r.type, "attempts": r.attempts, "dead_at": r.dead_at.isoformat()}
        for r in rows
    ]


def attempts(
    conn: sa.Connection, env_id: str, endpoint_id: str, after: int, limit: int
) -> list[Any]:
    endpoint_row(conn, env_id, endpoint_id)
    return list(
        conn.execute(
            sa.select(webhook_attempts, webhook_deliveries.c.message_id)
            .join(webhook_deliveries, webhook_deliveries.c.id == webhook_attempts.c.delivery_id)
            .where(webhook_deliveries.c.endpoint_id == endpoint_id, webhook_attempts.c.id > after)
            .order_by(webhook_attempts.c.id)
            .limit(limit)
        ).all()
    )
