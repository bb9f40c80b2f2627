"""A version's going live is due work, done at its `live_from`.

Tier windows and inactivity deadlines were re-planned by the new version as soon as it
was uploaded, even when it went live later or not at all: a version live from next June
skipped this New Year's roll, and one uploaded but never activated changed when balances
expire. `planned` says whether a version's going live has been applied to the members.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch: on SQLite a batch copies the table, and dropping the
    # old copy fails while orders refer to its rows.
    op.add_column(
        "program_versions",
        sa.Column("planned", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    # Versions made before this were planned when uploaded.
    op.execute("UPDATE program_versions SET planned = true WHERE live_from IS NOT NULL")


def downgrade() -> None:
    op.drop_column("program_versions", "planned")  # SQLite 3.35 and later drop in place
