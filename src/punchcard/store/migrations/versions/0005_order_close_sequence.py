"""Close order from a sequence on PostgreSQL, so concurrent closes don't queue on one row.

Until now every close bumped its environment's `close_seq`, which held that row's lock to
the end of the closing transaction: one environment closed one order at a time. A sequence
hands out numbers without a lock. It starts above every number given so far, so orders
closed later still sort later. SQLite keeps the counter: it has one writer at a time anyway.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE order_close_seq")
    op.execute(
        "SELECT setval('order_close_seq', "
        "(SELECT COALESCE(max(close_seq), 0) + 1 FROM environments), false)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE order_close_seq")
