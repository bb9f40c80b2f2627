"""Tenants, their environments (live, sandbox, named sandboxes) and API keys.

An API key belongs to one environment and carries scopes. It is shown once, when
made; the database keeps its id (the visible prefix) and the SHA-256 of the whole
key. Keys are 32 random bytes, so a fast hash is enough: there is nothing to guess.

A live key's principal is cached in process (services/caches.py); whatever changes a key or
an environment calls `caches.changed` in its transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from punchcard.errors import Forbidden, InvalidInput, InvalidState, NotFound
from punchcard.services import caches
from punchcard.store.tables import (
    api_keys,
    environments,
    program_versions,
    tenants,
    webhook_endpoints,
)

SCOPES = (
    "admin",
    "members:read",
    "members:write",
    "orders:read",
    "orders:write",
    "rewards:write",
    "gift_cards:read",
    "gift_cards:write",
    "programs:read",
    "programs:write",
    "sandboxes:write",
    "webhooks:read",
    "webhooks:write",
    "inbound:write",
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: one key of one environment of one tenant."""

    key_id: str
    env_id: str
    tenant_id: str
    env_kind: str  # live | sandbox
    scopes: frozenset[str]
    # A sandbox's own clock as read with the key (None: the system clock). Read here so that a
    # request needs no second round trip for its `now`.
    env_clock: datetime | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


KEY_NAME_MAX = 255  # api_keys.name: "sandbox " and a sandbox's name of up to 200 characters
TENANT_NAME_MAX = 200  # tenants.name


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    conn: sa.Connection, env_id: str, scopes: list[str], name: str, now: datetime
) -> str:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(
            f"scopes: choose from {', '.join(SCOPES)}; unknown: {', '.join(unknown)}"
        )
    if not name or len(name) > KEY_NAME_MAX:
        raise InvalidInput(f"name: 1 to {KEY_NAME_MAX} characters")
    kind = conn.execute(sa.select(environments.c.kind).where(environments.c.id == env_id)).scalar()
    if kind is None:
        raise NotFound(f"no environment {env_id!r}")
    key_id = f"pc_{kind[:4]}_{secrets.token_hex(6)}"
    key = f"{key_id}_{secrets.token_urlsafe(32)}"
    conn.execute(
        sa.insert(api_keys).values(
            id=key_id,
            env_id=env_id,
            secret_hash=_hash(key),
            scopes=sorted(scopes),
            name=name,
            created_at=now,
        )
    )
    return key


# Built once: every request runs it.
_KEY_WITH_ENVIRONMENT = (
    sa.select(
        api_keys,
        environments.c.tenant_id,
        environments.c.kind,
        environments.c.deleted_at,
        environments.c.clock,
    )
    .join(environments, environments.c.id == api_keys.c.env_id)
    .where(api_keys.c.id == sa.bindparam("b_key"))
)


def authenticate(conn: sa.Connection, key: str) -> Principal | None:
    """The principal a key stands for, or None for an unknown, revoked or malformed key."""
    cache = caches.reading(conn)
    if cache is not None:
        found = cache.principal(key)
        if found is not None:
            return found
        generation = cache.generation  # read before the row: a drop after it wins
    parts = key.split("_", 3)  # pc_<kind>_<id>_<secret>; the secret may hold "_" too
    if len(parts) != 4:
        return None
    key_id = "_".join(parts[:3])
    row = conn.execute(_KEY_WITH_ENVIRONMENT, {"b_key": key_id}).first()
    if row is None or row.revoked_at is not None or row.deleted_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _hash(key)):
        return None
    principal = Principal(
        row.id, row.env_id, row.tenant_id, row.kind, frozenset(row.scopes), row.clock
    )
    if cache is not None:
        cache.keep_principal(key, principal, generation)
    return principal


def cached(engine: sa.Engine, key: str) -> Principal | None:
    """The principal of a key this process has cached (a live key, read recently), without
    a database read: the guard asks this in the event loop before any thread hop."""
    cache = caches.of(engine)
    return None if cache is None else cache.principal(key)


def revoke_key(conn: sa.Connection, key_id: str, now: datetime) -> None:
    """Revoke a key: it is refused from this transaction's commit on, in every process."""
    env_id = conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(api_keys.c.env_id)
    ).scalar()
    if env_id is None:
        raise NotFound(f"no key {key_id!r} that is not revoked already")
    caches.changed(conn, env_id)


def _environment(
    conn: sa.Connection, tenant_id: str, kind: str, name: str, now: datetime, clock: datetime | None
) -> str:
    env_id = uuid.uuid4().hex
    conn.execute(
        sa.insert(environments).values(
            id=env_id,
            tenant_id=tenant_id,
            kind=kind,
            name=name,
            created_at=now,
            clock=clock,
            close_seq=0,
        )
    )
    return env_id


def create_tenant(engine: sa.Engine, name: str, now: datetime) -> dict[str, Any]:
    """A tenant with a live and a sandbox environment, and an admin key for each."""
    if not name.strip():
        raise InvalidInput("a tenant needs a name")
    if len(name) > TENANT_NAME_MAX:
        raise InvalidInput(f"a tenant's name is at most {TENANT_NAME_MAX} characters")
    with engine.begin() as conn:
        tenant_id = uuid.uuid4().hex
        conn.execute(sa.insert(tenants).values(id=tenant_id, name=name, created_at=now))
        live = _environment(conn, tenant_id, "live", "live", now, None)
        sandbox = _environment(conn, tenant_id, "sandbox", "sandbox", now, None)
        return {
            "tenant": tenant_id,
            "name": name,
            "live_environment": live,
            "sandbox_environment": sandbox,
            "live_key": create_key(conn, live, ["admin"], "admin", now),
            "sandbox_key": create_key(conn, sandbox, ["admin"], "admin", now),
        }


def environment_of(conn: sa.Connection, tenant_id: str, name: str) -> str:
    """A tenant's environment by name (live, sandbox, or a named sandbox's id)."""
    row = conn.execute(
        sa.select(environments.c.id)
        .where(
            environments.c.tenant_id == tenant_id,
            environments.c.deleted_at.is_(None),
            sa.or_(environments.c.name == name, environments.c.id == name),
        )
        .order_by((environments.c.id == name).desc(), environments.c.created_at)
    ).first()
    if row is None:
        raise NotFound(f"tenant has no environment {name!r}")
    return str(row.id)


def create_sandbox(
    conn: sa.Connection,
    principal: Principal,
    name: str,
    start: datetime,
    now: datetime,
    *,
    copy_programs: bool = True,
) -> dict[str, str]:
    """A named sandbox with its own data, clock and admin key, running the caller's program
    versions (or none, for a caller that brings its own program).

    Only the tenant's live and sandbox keys make them: a named sandbox's key manages only its
    own sandbox, so one it made could never be moved or deleted with it."""
    if _is_named_sandbox(conn, principal):
        raise Forbidden(
            "a named sandbox's key manages only its own sandbox: make sandboxes with a key of "
            "the tenant's live or sandbox environment"
        )
    env_id = _environment(conn, principal.tenant_id, "sandbox", name, now, start)
    copied: Sequence[Any] = ()
    if copy_programs:
        copied = conn.execute(
            sa.select(program_versions)
            .where(program_versions.c.env_id == principal.env_id)
            .order_by(program_versions.c.version)
        ).all()
    for row in copied:
        live_from = _copied_live_from(row.live_from, start, now)
        conn.execute(
            sa.insert(program_versions).values(
                env_id=env_id,
                program_id=row.program_id,
                version=row.version,
                live_from=live_from,
                # Live at the start: no member to plan for yet (and no `applied_seq`: the
                # first version going live re-plans everyone). Live later: its going live
                # re-plans the sandbox's members then, as it would in the environment copied.
                planned=live_from is not None and live_from <= start,
                document=row.document,
                source=row.source,
            )
        )
    key = create_key(conn, env_id, ["admin"], f"sandbox {name}", now)
    # Nothing of a new environment is cached, but whatever writes versions says so: the
    # transaction then keeps no version it wrote (and may roll back) in the process cache.
    caches.changed(conn, env_id)
    return {"id": env_id, "name": name, "key": key}


def _copied_live_from(
    live_from: datetime | None, start: datetime, now: datetime
) -> datetime | None:
    """When a copied version goes live in a new sandbox: one live at the caller's `now` is live
    from the sandbox's start (however early it starts); one the caller activated for later
    keeps its time, so the sandbox can be moved to it and watch it go live."""
    if live_from is None or live_from > now:
        return live_from
    return min(live_from, start)


def _is_named_sandbox(conn: sa.Connection, principal: Principal) -> bool:
    """Whether the key belongs to a named sandbox (not the tenant's live or sandbox)."""
    own = conn.execute(
        sa.select(environments.c.name, environments.c.kind).where(
            environments.c.id == principal.env_id
        )
    ).one()
    return bool(own.kind == "sandbox" and own.name != "sandbox")


def sandbox_row(conn: sa.Connection, principal: Principal, sandbox_id: str) -> Any:
    row = conn.execute(
        sa.select(environments).where(
            environments.c.id == sandbox_id,
            environments.c.tenant_id == principal.tenant_id,
            environments.c.deleted_at.is_(None),
        )
    ).first()
    named = _is_named_sandbox(conn, principal)
    if row is None or (named and sandbox_id != principal.env_id):
        # a named sandbox's key manages only itself; the tenant's live and sandbox keys manage all
        raise NotFound(f"no sandbox {sandbox_id!r}")
    if row.kind != "sandbox":
        raise InvalidState("live has no movable clock and can not be deleted here")
    return row


def delete_sandbox(
    conn: sa.Connection, principal: Principal, sandbox_id: str, now: datetime
) -> None:
    row = sandbox_row(conn, principal, sandbox_id)
    if row.name == "sandbox":
        raise InvalidState("the tenant's default sandbox can not be deleted")
    caches.changed(conn, sandbox_id)
    conn.execute(
        sa.update(environments).where(environments.c.id == sandbox_id).values(deleted_at=now)
    )
    conn.execute(sa.update(api_keys).where(api_keys.c.env_id == sandbox_id).values(revoked_at=now))
    conn.execute(  # a deleted sandbox sends nothing more
        sa.update(webhook_endpoints)
        .where(webhook_endpoints.c.env_id == sandbox_id)
        .values(state="disabled", disabled_reason="sandbox deleted", deleted_at=now)
    )
