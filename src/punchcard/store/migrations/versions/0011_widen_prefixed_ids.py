"""Room for a prefix and a caller's id of up to 200 characters.

A ledger transaction's reference is "order:" and the order's id, and a named sandbox's key
is named "sandbox " and the sandbox's name; ids and names are up to 200 characters, so an
order id of 195 to 200 characters overflowed `ledger_transactions.reference` (varchar 200)
on PostgreSQL, and its posting failed every round. Widened to 255: PostgreSQL changes only
the declared length (no rewrite); SQLite, which does not enforce it, copies the table in a
batch (foreign keys are off while migrating).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

WIDENED = (("ledger_transactions", "reference"), ("api_keys", "name"))


def upgrade() -> None:
    for table, column in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.String(255), existing_type=sa.String(200), existing_nullable=False
            )


def downgrade() -> None:
    # Fails on PostgreSQL while a value longer than 200 characters is stored, as it should:
    # narrowing would cut references the audit matches orders by.
    for table, column in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.String(200), existing_type=sa.String(255), existing_nullable=False
            )
