"""The ledger's hot path: no row shared by every posting, indexes for the hot reads.

- A system ledger account (`earned`, `redeemed`, `expired`, `issued`, `spent`) keeps no
  cached balance (NULL; a check holds it so): every posting of an environment moved one,
  so each posting updated a row that all of them share and held it to its commit. Its
  balance is the sum of its postings, read when asked for.
- The foreign keys whose check share-locked a row every insert shares go: `env_id` on
  orders, lots, ledger accounts and transactions (the environment's row), and a posting's
  `account_id` (a system account's row). Environments are never deleted; `punchcard
  audit` finds a row whose environment, or a posting whose account, does not exist.
- The deferred trigger `ledger_txn_balanced_v1` (PostgreSQL) goes: it summed a transaction
  again at commit for every posting. An entry is refused unbalanced in Python before it is
  written (`ledger.entries.Entry`), and `punchcard audit` finds a transaction that does not
  sum to zero (tests/integration/test_ledger_hot_path.py writes one by hand).
- `lots.order_id` is indexed (an order is read with its lot); on PostgreSQL the orders'
  due-time indexes hold pending orders only.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SYSTEM = "'earned', 'expired', 'issued', 'redeemed', 'spent'"
CACHED = f"(balance IS NULL) = (name IN ({SYSTEM}))"
ENV_KEYED = ("orders", "lots", "ledger_accounts", "ledger_transactions")
PENDING_INDEXES = (
    ("ix_orders_env_id_post_state_due_at", ["env_id", "post_state", "due_at"]),
    ("ix_orders_member_id_post_state_due_at", ["member_id", "post_state", "due_at"]),
)
# From 0001, which made them on PostgreSQL.
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


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgresql():
        op.execute("DROP TRIGGER IF EXISTS ledger_txn_balanced_v1 ON ledger_postings")
        op.execute("DROP FUNCTION IF EXISTS ledger_txn_balanced_v1()")
    with op.batch_alter_table("ledger_accounts") as batch:
        batch.alter_column("balance", existing_type=sa.BigInteger(), nullable=True)
    op.execute(f"UPDATE ledger_accounts SET balance = NULL WHERE name IN ({SYSTEM})")
    with op.batch_alter_table("ledger_accounts") as batch:
        batch.create_check_constraint("ledger_accounts_cached_v1", CACHED)
    for table in ENV_KEYED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_env_id_environments", type_="foreignkey")
    with op.batch_alter_table("ledger_postings") as batch:
        batch.drop_constraint("fk_ledger_postings_account_id_ledger_accounts", type_="foreignkey")
    op.create_index("ix_lots_order_id", "lots", ["order_id"])
    if _postgresql():
        for name, columns in PENDING_INDEXES:
            op.drop_index(name, table_name="orders")
            op.create_index(
                name, "orders", columns, postgresql_where=sa.text("post_state = 'pending'")
            )


def downgrade() -> None:
    if _postgresql():
        for name, columns in PENDING_INDEXES:
            op.drop_index(name, table_name="orders")
            op.create_index(name, "orders", columns)
    op.drop_index("ix_lots_order_id", table_name="lots")
    with op.batch_alter_table("ledger_postings") as batch:
        batch.create_foreign_key(
            "fk_ledger_postings_account_id_ledger_accounts",
            "ledger_accounts",
            ["account_id"],
            ["id"],
        )
    for table in ENV_KEYED:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(
                f"fk_{table}_env_id_environments", "environments", ["env_id"], ["id"]
            )
    with op.batch_alter_table("ledger_accounts") as batch:
        batch.drop_constraint("ledger_accounts_cached_v1", type_="check")
    op.execute(
        "UPDATE ledger_accounts SET balance = (SELECT COALESCE(SUM(p.amount), 0)"
        " FROM ledger_postings AS p WHERE p.account_id = ledger_accounts.id)"
        f" WHERE name IN ({SYSTEM})"
    )
    with op.batch_alter_table("ledger_accounts") as batch:
        batch.alter_column("balance", existing_type=sa.BigInteger(), nullable=False)
    if _postgresql():
        op.execute(BALANCED_FUNCTION)
        op.execute(BALANCED_TRIGGER)
