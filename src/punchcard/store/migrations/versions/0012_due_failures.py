"""Due work that failed is set aside for a later try instead of holding back everyone.

A posting (or expiry, window roll, hold release) that failed was tried again every round,
first, and nothing due after it in its environment was done: one bad order stopped every
member's postings. Now it waits in `due_failures` for its next try (a doubling pause), with
its member's later work, and `punchcard audit` lists it.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "due_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name="fk_due_failures_env_id_environments"
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_due_failures_member_id_members"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_due_failures"),
        sa.UniqueConstraint(
            "env_id", "kind", "item_id", name="uq_due_failures_env_id_kind_item_id"
        ),
    )


def downgrade() -> None:
    op.drop_table("due_failures")
