"""Initial schema, and on PostgreSQL the deferred trigger that keeps every transaction balanced.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

import punchcard.store.tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


BALANCED_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_txn_balanced_v1() RETURNS trigger AS $$
BEGIN
  IF (SELECT COALESCE(SUM(amount), 0) FROM ledger_postings
      WHERE transaction_id = NEW.transaction_id) <> 0 THEN
    RAISE EXCEPTION 'ledger_txn_balanced_v1: transaction % does not sum to zero',
      NEW.transaction_id USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""

BALANCED_TRIGGER = """
CREATE CONSTRAINT TRIGGER ledger_txn_balanced_v1 AFTER INSERT ON ledger_postings
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_txn_balanced_v1()
"""


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("clock", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("close_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
    )
    op.create_table(
        "gift_cards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_approved", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_gift_cards_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gift_cards")),
        sa.UniqueConstraint("env_id", "external_id", name=op.f("uq_gift_cards_env_id_external_id")),
    )
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("asset", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_ledger_accounts_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint(
            "env_id", "asset", "name", name=op.f("uq_ledger_accounts_env_id_asset_name")
        ),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("asset", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_ledger_transactions_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("enrolled_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("progress", sa.BigInteger(), nullable=False),
        sa.Column("visits", sa.Integer(), nullable=False),
        sa.Column("punches", sa.JSON(), nullable=False),
        sa.Column(
            "window_start", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("window_end", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_activity_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "inactivity_due_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("event_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_members_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        sa.UniqueConstraint("env_id", "external_id", name=op.f("uq_members_env_id_external_id")),
    )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_members_env_id_inactivity_due_at"),
            ["env_id", "inactivity_due_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_members_env_id_window_end"), ["env_id", "window_end"], unique=False
        )

    op.create_table(
        "program_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("live_from", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_program_versions_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_versions")),
        sa.UniqueConstraint("env_id", "version", name=op.f("uq_program_versions_env_id_version")),
    )
    with op.batch_alter_table("program_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_program_versions_env_id_live_from"),
            ["env_id", "live_from"],
            unique=False,
        )

    op.create_table(
        "holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("card_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name="holds_amount_positive_v1"),
        sa.ForeignKeyConstraint(
            ["card_id"], ["gift_cards.id"], name=op.f("fk_holds_card_id_gift_cards")
        ),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_holds_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
        sa.UniqueConstraint("env_id", "external_id", name=op.f("uq_holds_env_id_external_id")),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_holds_env_id_state_expires_at"),
            ["env_id", "state", "expires_at"],
            unique=False,
        )

    op.create_table(
        "ledger_postings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name="ledger_postings_nonzero_v1"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_postings_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_postings_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_postings")),
    )
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_postings_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_postings_transaction_id"), ["transaction_id"], unique=False
        )

    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("refunded", sa.JSON(), nullable=False),
        sa.Column("line_discounts", sa.JSON(), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("spend", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("visit", sa.Boolean(), nullable=False),
        sa.Column("visit_day", sa.String(length=10), nullable=True),
        sa.Column("closed_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("close_seq", sa.BigInteger(), nullable=True),
        sa.Column("post_state", sa.String(length=16), server_default="none", nullable=False),
        sa.Column("due_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("posted_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("posted_visit", sa.Boolean(), nullable=False),
        sa.Column("posted_spend", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "posted_window", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_orders_env_id_environments")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_orders_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["program_versions.id"],
            name=op.f("fk_orders_version_id_program_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("env_id", "external_id", name=op.f("uq_orders_env_id_external_id")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_orders_env_id_post_state_due_at"),
            ["env_id", "post_state", "due_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_orders_member_id_visit_day"), ["member_id", "visit_day"], unique=False
        )

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=True),
        sa.Column("member_seq", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("published_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_outbox_env_id_environments")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_outbox_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_env_id_published_at"), ["env_id", "published_at"], unique=False
        )

    op.create_table(
        "tier_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_tier_changes_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_changes")),
    )
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tier_changes_member_id_at"), ["member_id", "at"], unique=False
        )

    op.create_table(
        "lots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("due_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("posted_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= amount", name="lots_remaining_in_range_v1"
        ),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_lots_env_id_environments")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_lots_member_id_members")
        ),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_lots_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lots")),
    )
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lots_env_id_state_expires_at"),
            ["env_id", "state", "expires_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_lots_member_id_state"), ["member_id", "state"], unique=False
        )

    op.create_table(
        "promotion_uses",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("promotion_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_promotion_uses_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_promotion_uses_order_id_orders")
        ),
        sa.PrimaryKeyConstraint(
            "member_id", "promotion_id", "order_id", name=op.f("pk_promotion_uses")
        ),
    )
    op.create_table(
        "rewards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=200), nullable=True),
        sa.Column("reward_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("issued_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_rewards_env_id_environments")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_rewards_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_rewards_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
        sa.UniqueConstraint("env_id", "alias", name=op.f("uq_rewards_env_id_alias")),
    )
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rewards_env_id_state_expires_at"),
            ["env_id", "state", "expires_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_rewards_member_id_state"), ["member_id", "state"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        # A bug above the ledger must not be able to commit an unbalanced transaction.
        op.execute(BALANCED_FUNCTION)
        op.execute(BALANCED_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_txn_balanced_v1 ON ledger_postings")
        op.execute("DROP FUNCTION IF EXISTS ledger_txn_balanced_v1()")
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rewards_member_id_state"))
        batch_op.drop_index(batch_op.f("ix_rewards_env_id_state_expires_at"))

    op.drop_table("rewards")
    op.drop_table("promotion_uses")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lots_member_id_state"))
        batch_op.drop_index(batch_op.f("ix_lots_env_id_state_expires_at"))

    op.drop_table("lots")
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tier_changes_member_id_at"))

    op.drop_table("tier_changes")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_env_id_published_at"))

    op.drop_table("outbox")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_member_id_visit_day"))
        batch_op.drop_index(batch_op.f("ix_orders_env_id_post_state_due_at"))

    op.drop_table("orders")
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_postings_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_postings_account_id"))

    op.drop_table("ledger_postings")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_holds_env_id_state_expires_at"))

    op.drop_table("holds")
    with op.batch_alter_table("program_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_program_versions_env_id_live_from"))

    op.drop_table("program_versions")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_members_env_id_window_end"))
        batch_op.drop_index(batch_op.f("ix_members_env_id_inactivity_due_at"))

    op.drop_table("members")
    op.drop_table("ledger_transactions")
    op.drop_table("ledger_accounts")
    op.drop_table("gift_cards")
    op.drop_table("environments")
