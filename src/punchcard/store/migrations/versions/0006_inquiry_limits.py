"""Balance inquiry limits live in the database, so every server process shares them.

Each process kept its own token buckets: behind N processes a key could make N times its
inquiries a minute, and a restart forgot them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inquiry_limits",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("env_id", sa.String(64), nullable=False),
        sa.Column("next_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_inquiry_limits_key_id_api_keys"
        ),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name="fk_inquiry_limits_env_id_environments"
        ),
        sa.PrimaryKeyConstraint("key_id", name="pk_inquiry_limits"),
    )


def downgrade() -> None:
    op.drop_table("inquiry_limits")
