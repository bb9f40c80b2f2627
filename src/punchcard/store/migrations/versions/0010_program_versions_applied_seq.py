"""The order in which versions' going live was applied to the members.

A version that plans members alike the version it takes over from re-plans no one, if that
version was also the last applied (services/programs.py): with the worker behind, a version
live from earlier can be applied after it. Versions applied before this keep no order (NULL):
the next version going live re-plans everyone, as every one did before, which also sets
right plans that an upload made before 0009 left behind.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch: on SQLite a batch copies the table (see 0009).
    op.add_column("program_versions", sa.Column("applied_seq", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("program_versions", "applied_seq")
