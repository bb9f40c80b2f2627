"""The schema. Alembic migrations must produce exactly this (tests/integration/test_schema.py).

Every row belongs to an environment (a tenant's sandbox or live, or a scenario run), so
one database can hold many isolated worlds. Invariants the database enforces carry
versioned constraint names so errors can be mapped back to domain rules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import TypeDecorator

from punchcard.ledger.entries import SYSTEM_ACCOUNTS

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware in Python, UTC in the database (SQLite has no time zones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every time in Punchcard is timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CurrentTx(sa.sql.expression.FunctionElement[int]):
    """The writing transaction's id (PostgreSQL's `pg_current_xact_id()`), 0 on SQLite."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(CurrentTx)
def _current_tx(element: CurrentTx, compiler: Any, **kw: Any) -> str:
    return "0"


@compiles(CurrentTx, "postgresql")
def _current_tx_pg(element: CurrentTx, compiler: Any, **kw: Any) -> str:
    return "(pg_current_xact_id()::text::bigint)"


def _env() -> sa.Column[str]:
    return sa.Column("env_id", sa.String(64), sa.ForeignKey("environments.id"), nullable=False)


def _env_unchecked() -> sa.Column[str]:
    """A hot table's environment, without a foreign key (0013): the key's check share-locked
    the environment's row at every insert. Environments are never deleted, and `punchcard
    audit` finds a row whose environment does not exist."""
    return sa.Column("env_id", sa.String(64), nullable=False)


_PENDING = "post_state = 'pending'"
_SYSTEM_NAMES = ", ".join(f"'{name}'" for name in sorted(SYSTEM_ACCOUNTS))


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

environments = sa.Table(
    "environments",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False, server_default="sandbox"),  # live | sandbox
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("clock", UtcDateTime, nullable=True),  # a sandbox's movable clock; None: wall clock
    # Close order on SQLite; PostgreSQL numbers closes from the order_close_seq sequence (0005).
    sa.Column("close_seq", sa.BigInteger, nullable=False, server_default="0"),
    # How far due work has got, for operators (reads check the data itself, see consistency.md).
    sa.Column("processed_through", UtcDateTime, nullable=True),
    # A worker's claim on the environment's due work (stalled claims expire).
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UtcDateTime, nullable=True),
    # When a worker last did its due work (wall clock): claims go to the longest-waiting first.
    sa.Column("checked_at", UtcDateTime, nullable=True),
    sa.Column("deleted_at", UtcDateTime, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # also the key's visible prefix
    _env(),
    sa.Column("secret_hash", sa.String(64), nullable=False),  # sha256 of the whole key
    sa.Column("scopes", sa.JSON, nullable=False),
    # "sandbox " and a sandbox's name of up to 200 characters (widened from 200 in 0011).
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
)

# Balance inquiries per API key, shared by every server process: GCRA keeps one number per
# key, the theoretical arrival time of its next inquiry (UTC, microseconds since the epoch, so
# one portable statement can compare and move it).
inquiry_limits = sa.Table(
    "inquiry_limits",
    metadata,
    sa.Column("key_id", sa.String(32), sa.ForeignKey("api_keys.id"), primary_key=True),
    _env(),
    sa.Column("next_at_us", sa.BigInteger, nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env(),
    sa.Column("api_key_id", sa.String(32), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # method, path and body
    sa.Column("state", sa.String(16), nullable=False),  # in_flight | done
    sa.Column("locked_until", UtcDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("response", sa.LargeBinary, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("env_id", "api_key_id", "key"),
    sa.Index(None, "expires_at"),
)

program_versions = sa.Table(
    "program_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env(),
    sa.Column("program_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("live_from", UtcDateTime, nullable=True),  # None: uploaded, not yet activated
    # Its going live applied to the members (their windows and inactivity re-planned, 0009).
    sa.Column("planned", sa.Boolean, nullable=False, server_default=sa.false()),
    # The order in which going live was applied (0010): the highest was applied last.
    sa.Column("applied_seq", sa.Integer, nullable=True),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.UniqueConstraint("env_id", "version"),
    sa.Index(None, "env_id", "live_from"),
)

members = sa.Table(
    "members",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env(),
    sa.Column("external_id", sa.String(200), nullable=False),
    sa.Column("card_number", sa.String(64), nullable=True),
    sa.Column("email", sa.String(320), nullable=True),  # personal data: never logged
    sa.Column("phone", sa.String(32), nullable=True),  # personal data: never logged
    sa.Column("enrolled_at", UtcDateTime, nullable=False),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("progress", sa.BigInteger, nullable=False),
    sa.Column("visits", sa.Integer, nullable=False),
    sa.Column("punches", sa.JSON, nullable=False),
    sa.Column("window_start", UtcDateTime, nullable=False),
    sa.Column("window_end", UtcDateTime, nullable=True),
    sa.Column("last_activity_at", UtcDateTime, nullable=True),
    sa.Column("inactivity_due_at", UtcDateTime, nullable=True),
    sa.Column("event_seq", sa.BigInteger, nullable=False, server_default="0"),
    # A lower bound on its lots expiring, rewards lapsing, orders posting (services/due.py).
    sa.Column("next_due_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("env_id", "external_id"),
    sa.Index(None, "env_id", "window_end"),
    sa.Index(None, "env_id", "inactivity_due_at"),
)

tier_changes = sa.Table(
    "tier_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Index(None, "member_id", "at"),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env_unchecked(),
    sa.Column("external_id", sa.String(200), nullable=False),
    sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("program_versions.id"), nullable=False),
    sa.Column("tier", sa.String(64), nullable=False),  # the member's tier when it was placed
    sa.Column("document", sa.JSON, nullable=False),  # lines, discounts, tax, tip, fees, tenders
    sa.Column("refunded", sa.JSON, nullable=False),  # line id -> refunded quantity
    sa.Column("line_discounts", sa.JSON, nullable=True),  # fixed at close and at each edit
    sa.Column("outcome", sa.JSON, nullable=True),
    sa.Column("points", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("spend", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("visit", sa.Boolean, nullable=False),
    sa.Column("visit_day", sa.String(10), nullable=True),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Column("close_seq", sa.BigInteger, nullable=True),
    sa.Column("post_state", sa.String(16), nullable=False, server_default="none"),
    sa.Column("due_at", UtcDateTime, nullable=True),
    sa.Column("posted_points", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("posted_visit", sa.Boolean, nullable=False),
    sa.Column("posted_spend", sa.BigInteger, nullable=False, server_default="0"),
    # The tier window the order last added progress to, and what it has added to it (0007).
    sa.Column("posted_window", UtcDateTime, nullable=True),
    sa.Column("window_points", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("window_visit", sa.Integer, nullable=False, server_default="0"),
    sa.Column("window_spend", sa.BigInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("env_id", "external_id"),
    # Only pending orders are looked up by due time: on PostgreSQL these hold no other (0013).
    sa.Index(None, "env_id", "post_state", "due_at", postgresql_where=sa.text(_PENDING)),
    sa.Index(None, "member_id", "visit_day"),
    # A member's catch-up (0008).
    sa.Index(None, "member_id", "post_state", "due_at", postgresql_where=sa.text(_PENDING)),
)

promotion_uses = sa.Table(
    "promotion_uses",
    metadata,
    sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), primary_key=True),
    sa.Column("promotion_id", sa.String(64), primary_key=True),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), primary_key=True),
)

lots = sa.Table(
    "lots",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env_unchecked(),
    sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), nullable=False),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("remaining", sa.BigInteger, nullable=False),
    sa.Column("due_at", UtcDateTime, nullable=True),
    sa.Column("posted_at", UtcDateTime, nullable=True),
    sa.Column("expires_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name="lots_remaining_in_range_v1"),
    sa.Index(None, "member_id", "state"),
    sa.Index(None, "env_id", "state", "expires_at"),
    sa.Index(None, "order_id"),  # an order's lot, read with the order (0013)
)

rewards = sa.Table(
    "rewards",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env(),
    sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), nullable=False),
    sa.Column("alias", sa.String(200), nullable=True),
    sa.Column("reward_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("issued_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=True),
    sa.Column("source", sa.String(100), nullable=False),
    sa.UniqueConstraint("env_id", "alias"),
    sa.Index(None, "member_id", "state"),
    sa.Index(None, "env_id", "state", "expires_at"),
)

gift_cards = sa.Table(
    "gift_cards",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env(),
    sa.Column("external_id", sa.String(200), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("last_approved", sa.BigInteger, nullable=True),
    sa.Column("number", sa.String(19), nullable=True),  # 16 digits, the last a Luhn check digit
    sa.Column("pin_hash", sa.String(128), nullable=True),  # scrypt, salted
    sa.Column("pin_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", UtcDateTime, nullable=True),
    sa.UniqueConstraint("env_id", "external_id"),
    sa.UniqueConstraint("env_id", "number"),
)

holds = sa.Table(
    "holds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env(),
    sa.Column("external_id", sa.String(200), nullable=False),
    sa.Column("card_id", sa.Integer, sa.ForeignKey("gift_cards.id"), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("captured", sa.BigInteger, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("env_id", "external_id"),
    sa.CheckConstraint("amount > 0", name="holds_amount_positive_v1"),
    sa.Index(None, "env_id", "state", "expires_at"),
)

ledger_accounts = sa.Table(
    "ledger_accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env_unchecked(),
    sa.Column("asset", sa.String(80), nullable=False),
    sa.Column("name", sa.String(120), nullable=False),
    # The sum of the account's postings, cached; NULL for a system account, whose balance is
    # that sum read when asked for (0013: every posting moved one, a row shared by all).
    sa.Column("balance", sa.BigInteger, nullable=True, server_default="0"),
    sa.UniqueConstraint("env_id", "asset", "name"),
    sa.CheckConstraint(
        f"(balance IS NULL) = (name IN ({_SYSTEM_NAMES}))", name="ledger_accounts_cached_v1"
    ),
)

ledger_transactions = sa.Table(
    "ledger_transactions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env_unchecked(),
    sa.Column("asset", sa.String(80), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    # "order:" and an order's id of up to 200 characters (widened from 200 in 0011).
    sa.Column("reference", sa.String(255), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
)

ledger_postings = sa.Table(
    "ledger_postings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "transaction_id", sa.Integer, sa.ForeignKey("ledger_transactions.id"), nullable=False
    ),
    # No foreign key (0013): its check share-locked the account's row at every posting, and
    # every posting names a system account. `punchcard audit` finds a posting without one.
    sa.Column("account_id", sa.Integer, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.CheckConstraint("amount <> 0", name="ledger_postings_nonzero_v1"),
    sa.Index(None, "transaction_id"),
    sa.Index(None, "account_id"),
)

# Due work that failed (0012): the item waits for its next try, by the wall clock, and holds
# back its member's later due work (a version going live: everything from its time on);
# every other member's goes on. The row goes once the item is done.
due_failures = sa.Table(
    "due_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env(),
    # version | window | lots | inactivity | reward | hold | posting
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("item_id", sa.Integer, nullable=False),  # the version, member, reward, hold or order
    sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), nullable=True),
    sa.Column("due_at", UtcDateTime, nullable=False),  # when it was due, in its environment's time
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("first_failed_at", UtcDateTime, nullable=False),
    sa.Column("next_try_at", UtcDateTime, nullable=False),
    sa.Column("error", sa.String(500), nullable=False),  # the last failure's, first line
    sa.UniqueConstraint("env_id", "kind", "item_id"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _env(),
    sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), nullable=True),
    sa.Column("member_seq", sa.BigInteger, nullable=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("published_at", UtcDateTime, nullable=True),  # unused since 0014 (cursors)
    # The writing transaction's id on PostgreSQL (0 on SQLite, whose writers take turns): a
    # sender reads only events of finished transactions, in (tx, id) order (0014).
    sa.Column("tx", sa.BigInteger, sa.DefaultClause(CurrentTx()), nullable=False),
    sa.Index(None, "env_id", "tx", "id"),
)

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    _env(),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("event_types", sa.JSON, nullable=False),  # [] means every type
    sa.Column("secrets", sa.JSON, nullable=False),  # [{"secret", "expires_at"|None}], newest first
    sa.Column("state", sa.String(16), nullable=False),  # enabled | disabled
    sa.Column("disabled_reason", sa.String(200), nullable=True),
    sa.Column("failing_since", UtcDateTime, nullable=True),
    sa.Column("locked_until", UtcDateTime, nullable=True),  # a deliverer is sending to it
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("deleted_at", UtcDateTime, nullable=True),
    # The last outbox event sent, as (tx, id): a sender sends what follows and moves it once a
    # batch (0014). `start_*` is where it began: events before it were never meant for it.
    sa.Column("cursor_tx", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cursor_id", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("start_tx", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("start_id", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("delivered", sa.BigInteger, nullable=False, server_default="0"),  # 2xx first tries
    sa.Index(None, "env_id", "state"),
)

webhook_messages = sa.Table(
    "webhook_messages",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the webhook-id receivers dedupe on
    _env(),
    sa.Column("outbox_id", sa.Integer, sa.ForeignKey("outbox.id"), nullable=False, unique=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the exact JSON that is signed and sent
    sa.Column("created_at", UtcDateTime, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_id", sa.String(40), sa.ForeignKey("webhook_messages.id"), nullable=False),
    sa.Column("endpoint_id", sa.String(40), sa.ForeignKey("webhook_endpoints.id"), nullable=False),
    # pending (waits while its endpoint is disabled) | delivered | dead | dropped (deleted)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=True),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    sa.Column("dead_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("message_id", "endpoint_id"),
    sa.Index(None, "endpoint_id", "state", "next_attempt_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("webhook_deliveries.id"), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("response_excerpt", sa.String(500), nullable=True),
    sa.Column("error", sa.String(500), nullable=True),
    sa.Index(None, "delivery_id"),
)

inbound_sources = sa.Table(
    "inbound_sources",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the {source} of /v1/inbound/{source}
    _env(),
    sa.Column("mapping", sa.String(64), nullable=False),  # which mapping module reads its events
    sa.Column("secret", sa.String(200), nullable=False),  # shared HMAC secret
    sa.Column("created_at", UtcDateTime, nullable=False),
)

inbound_events = sa.Table(
    "inbound_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_id", sa.String(40), sa.ForeignKey("inbound_sources.id"), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | done | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("outcome", sa.String(500), nullable=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("source_id", "event_id"),
    sa.Index(None, "state", "next_attempt_at"),
)
