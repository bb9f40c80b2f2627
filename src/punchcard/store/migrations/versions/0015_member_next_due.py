"""A member's next due time: `catch_up` reads it with the member's lock instead of querying.

`members.next_due_at` is a lower bound on the earliest of the member's lots expiring, rewards
lapsing and orders posting (its window's end and inactivity expiry are columns already):
whatever makes such work lowers it in the same transaction, and `catch_up` recomputes it when
it passes. Every existing member starts due (2000-01-01), so each is looked at once, at its
next request, and its time computed then.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from punchcard.store.tables import UtcDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("members", sa.Column("next_due_at", UtcDateTime(), nullable=True))
    members = sa.table("members", sa.column("next_due_at", UtcDateTime()))
    op.get_bind().execute(sa.update(members).values(next_due_at=datetime(2000, 1, 1, tzinfo=UTC)))


def downgrade() -> None:
    with op.batch_alter_table("members") as batch_op:
        batch_op.drop_column("next_due_at")
