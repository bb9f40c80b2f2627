"""An index for one member's due postings.

A request that changes a member first does that member's due work (rule 14, even when the
worker is behind), which looks up the member's pending postings due by now: by member,
state and due time, not through every order the member ever placed.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_orders_member_id_post_state_due_at", "orders", ["member_id", "post_state", "due_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_orders_member_id_post_state_due_at", "orders")
