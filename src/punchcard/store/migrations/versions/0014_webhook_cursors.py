"""Webhooks from a cursor: the outbox row is the message.

Fan-out made a message, a delivery per endpoint and an attempt for every event, and
updated the outbox row: some 20 rows per order. Now each endpoint keeps a cursor, the
(tx, id) of the last event sent to it; a sender reads what follows, sends it and moves the
cursor once a batch. Message, delivery and attempt rows are made only for failures,
resends and dead letters. `outbox.tx` is the writing transaction's id on PostgreSQL, so
a sender reads only events of finished transactions and never passes one still to commit.

Existing endpoints start where fan-out stopped: before the first event it had not made a
message of (one made already is sent again with its own id, which receivers dedupe on).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_POSITIONS = ("cursor_tx", "cursor_id", "start_tx", "start_id", "delivered")


def upgrade() -> None:
    # 0 for every existing row (all finished), then each new row its transaction's id.
    op.add_column("outbox", sa.Column("tx", sa.BigInteger(), server_default="0", nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE outbox ALTER COLUMN tx SET DEFAULT (pg_current_xact_id()::text::bigint)"
        )
    op.drop_index("ix_outbox_env_id_published_at", table_name="outbox")
    op.create_index("ix_outbox_env_id_tx_id", "outbox", ["env_id", "tx", "id"])
    for name in _POSITIONS:
        op.add_column(
            "webhook_endpoints",
            sa.Column(name, sa.BigInteger(), server_default="0", nullable=False),
        )
    op.execute(
        "UPDATE webhook_endpoints SET"
        " cursor_id = COALESCE("
        "  (SELECT min(o.id) - 1 FROM outbox o"
        "   WHERE o.env_id = webhook_endpoints.env_id AND o.published_at IS NULL),"
        "  (SELECT max(o.id) FROM outbox o WHERE o.env_id = webhook_endpoints.env_id),"
        "  0)"
    )
    op.execute("UPDATE webhook_endpoints SET start_id = cursor_id")


def downgrade() -> None:
    # Fan-out takes over: what every endpoint of its environment was sent counts as published.
    op.execute(
        "UPDATE outbox SET published_at = created_at WHERE published_at IS NULL AND NOT EXISTS"
        " (SELECT 1 FROM webhook_endpoints e WHERE e.env_id = outbox.env_id"
        "  AND e.deleted_at IS NULL AND (outbox.tx > e.cursor_tx"
        "  OR (outbox.tx = e.cursor_tx AND outbox.id > e.cursor_id)))"
    )
    with op.batch_alter_table("webhook_endpoints") as batch_op:
        for name in reversed(_POSITIONS):
            batch_op.drop_column(name)
    op.drop_index("ix_outbox_env_id_tx_id", table_name="outbox")
    op.create_index("ix_outbox_env_id_published_at", "outbox", ["env_id", "published_at"])
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("tx")
