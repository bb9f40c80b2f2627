"""Environments remember when a worker last did their due work (fair claims).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import punchcard.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "checked_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.drop_column("checked_at")
