"""Outbound webhooks: endpoints, their secrets, and messages made from the outbox.

Every committed event is in the outbox (written in its change's transaction). Fan-out
turns each outbox row, once, into a message (its `id` is the `webhook-id` receivers
dedupe on) and a delivery per subscribed endpoint; `worker/delivery.py` sends them.
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

from punchcard.errors import InvalidInput, NotFound
from punchcard.services.addresses import is_public, resolve
from punchcard.store.database import single_statement
from punchcard.store.tables import (
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
FAN_OUT_BATCH = 500


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
    conn.execute(
        sa.insert(webhook_endpoints).values(
            id=endpoint_id,
            env_id=env_id,
            url=url,
            event_types=_types(data.get("event_types")),
            secrets=[{"secret": secret, "expires_at": None}],
            state="enabled",
            created_at=now,
        )
    )
    return {**view(endpoint_row(conn, env_id, endpoint_id), now), "secret": secret}


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


def fan_out(conn: sa.Connection, env_id: str, now: datetime) -> int:
    """Turn unpublished outbox rows into messages and deliveries, once each."""
    rows = conn.execute(
        sa.select(outbox, members.c.external_id.label("member_ref"))
        .select_from(outbox.outerjoin(members, members.c.id == outbox.c.member_id))
        .where(outbox.c.env_id == env_id, outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .limit(FAN_OUT_BATCH)
        .with_for_update(skip_locked=True, of=outbox)
    ).all()
    if not rows:
        return 0
    endpoints = conn.execute(  # disabled ones too: their messages wait for them, not lost
        sa.select(webhook_endpoints.c.id, webhook_endpoints.c.event_types).where(
            webhook_endpoints.c.env_id == env_id, webhook_endpoints.c.deleted_at.is_(None)
        )
    ).all()
    messages, deliveries = [], []
    for row in rows:
        message_id = f"msg_{uuid.uuid4().hex}"
        data = {**row.payload}
        if row.member_ref is not None:
            data.update(member=row.member_ref, member_seq=row.member_seq)
        body = json.dumps(
            {"type": row.type, "timestamp": row.created_at.isoformat(), "data": data},
            separators=(",", ":"),
            sort_keys=True,
        )
        messages.append(
            {
                "id": message_id,
                "env_id": env_id,
                "outbox_id": row.id,
                "type": row.type,
                "body": body,
                "created_at": now,
            }
        )
        for endpoint in endpoints:
            if not endpoint.event_types or row.type in endpoint.event_types:
                deliveries.append(
                    {
                        "message_id": message_id,
                        "endpoint_id": endpoint.id,
                        "state": "pending",  # a disabled endpoint's wait: it is not claimed
                        "attempts": 0,
                        "next_attempt_at": now,
                    }
                )
    conn.execute(sa.insert(webhook_messages), messages)
    if deliveries:
        conn.execute(sa.insert(webhook_deliveries), deliveries)
    conn.execute(
        sa.update(outbox).where(outbox.c.id.in_([r.id for r in rows])).values(published_at=now)
    )
    return len(rows)


_ENVIRONMENTS_TO_FAN_OUT = (
    sa.select(outbox.c.env_id).where(outbox.c.published_at.is_(None)).distinct()
)


def fan_out_all(engine: sa.Engine, now: datetime) -> int:
    """Fan out every environment's committed events, a batch per transaction.

    The deliverer does this before each round, beside (not after) the due work that makes
    the events, so messages go out while postings are still being done; rows taken by a
    concurrent fan-out are skipped, so each becomes one message."""
    with single_statement(engine) as conn:  # on SQLite no write lock, for a look mostly empty
        env_ids = list(conn.execute(_ENVIRONMENTS_TO_FAN_OUT).scalars())
    made = 0
    for env_id in env_ids:
        while True:
            with engine.begin() as conn:
                count = fan_out(conn, env_id, now)
            made += count
            if count < FAN_OUT_BATCH:
                break
    return made


def resend(conn: sa.Connection, env_id: str, message_id: str, now: datetime) -> int:
    """Send one message again to every endpoint it went to (or was meant for) that is not
    deleted; a disabled one gets it when enabled. `now` is the server's clock, the one the
    deliverer schedules by (not a sandbox's)."""
    found = conn.execute(
        sa.select(webhook_messages.c.id).where(
            webhook_messages.c.env_id == env_id, webhook_messages.c.id == message_id
        )
    ).first()
    if found is None:
        raise NotFound(f"no webhook message {message_id!r}")
    return int(
        conn.execute(
            sa.update(webhook_deliveries)
            .where(
                webhook_deliveries.c.message_id == message_id,
                webhook_deliveries.c.endpoint_id.in_(
                    sa.select(webhook_endpoints.c.id).where(
                        webhook_endpoints.c.deleted_at.is_(None)
                    )
                ),
            )
            .values(state="pending", attempts=0, next_attempt_at=now, dead_at=None)
        ).rowcount
    )


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
