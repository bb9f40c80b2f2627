"""Orders remember what they have added to their tier window's progress.

A change to a posted order took back progress from the window it first posted in, while
a gain from an edit counted in the window current at the edit; an edit up and back down
in a later window left the gain in that window for good. Each order now keeps what it has
added to the window it last added to, and takes back no more than that.

Progress already inflated before this migration stays as it is (what each order added
to a window was not kept); the backfill rewrites every posted order once.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column("window_points", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("window_visit", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("window_spend", sa.BigInteger(), server_default="0", nullable=False)
        )
    # A posted order has added everything it posted to the window it posted in.
    op.execute(
        "UPDATE orders SET window_points = posted_points, window_spend = posted_spend, "
        "window_visit = CASE WHEN posted_visit THEN 1 ELSE 0 END WHERE post_state = 'posted'"
    )


def downgrade() -> None:
    # Plain drops, not a batch: on SQLite a batch copies the table, and dropping the old
    # copy fails while lots refer to its rows (SQLite 3.35 and later drop in place).
    for column in ("window_spend", "window_visit", "window_points"):
        op.drop_column("orders", column)
