"""Tenants, API keys, idempotency records, sandbox clocks, activatable versions, card PINs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import punchcard.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_api_keys_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column(
            "locked_until", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_idempotency_keys_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint(
            "env_id", "api_key_id", "key", name=op.f("uq_idempotency_keys_env_id_api_key_id_key")
        ),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False
        )

    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant_id", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="sandbox", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "processed_through",
                punchcard.store.tables.UtcDateTime(timezone=True),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "lease_until", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "deleted_at", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True
            )
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_environments_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"]
        )

    with op.batch_alter_table("gift_cards", schema=None) as batch_op:
        batch_op.add_column(sa.Column("number", sa.String(length=19), nullable=True))
        batch_op.add_column(sa.Column("pin_hash", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("pin_failures", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "locked_until", punchcard.store.tables.UtcDateTime(timezone=True), nullable=True
            )
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_gift_cards_env_id_number"), ["env_id", "number"]
        )

    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("card_number", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("phone", sa.String(length=32), nullable=True))

    with op.batch_alter_table("program_versions", schema=None) as batch_op:
        batch_op.alter_column(
            "live_from",
            existing_type=punchcard.store.tables.UtcDateTime(timezone=True),
            nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("program_versions", schema=None) as batch_op:
        batch_op.alter_column(
            "live_from",
            existing_type=punchcard.store.tables.UtcDateTime(timezone=True),
            nullable=False,
        )

    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("phone")
        batch_op.drop_column("email")
        batch_op.drop_column("card_number")

    with op.batch_alter_table("gift_cards", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_gift_cards_env_id_number"), type_="unique")
        batch_op.drop_column("locked_until")
        batch_op.drop_column("pin_failures")
        batch_op.drop_column("pin_hash")
        batch_op.drop_column("number")

    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_environments_tenant_id_tenants"), type_="foreignkey"
        )
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_owner")
        batch_op.drop_column("processed_through")
        batch_op.drop_column("kind")
        batch_op.drop_column("tenant_id")

    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_expires_at"))

    op.drop_table("idempotency_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
