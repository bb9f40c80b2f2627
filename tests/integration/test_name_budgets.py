"""Names an operator gives the CLI are bounded by the columns that hold them: one too long is
refused as invalid input, and nothing is written (on PostgreSQL it failed as a database error,
after nothing had been checked)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from punchcard.errors import InvalidInput
from punchcard.services.tenants import create_key, create_tenant
from punchcard.store.tables import api_keys, tenants

from .helpers import START


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_a_tenant_name_over_200_characters_is_refused(engine: sa.Engine) -> None:
    with pytest.raises(InvalidInput, match=r"^a tenant's name is at most 200 characters$"):
        create_tenant(engine, "T" * 201, START)
    assert _count(engine, tenants) == 0
    assert create_tenant(engine, "T" * 200, START)["name"] == "T" * 200


def test_a_key_name_over_255_characters_is_refused(engine: sa.Engine) -> None:
    made = create_tenant(engine, "Alpha", START)
    with engine.begin() as conn, pytest.raises(InvalidInput, match=r"^name: 1 to 255 characters$"):
        create_key(conn, made["sandbox_environment"], ["members:read"], "k" * 256, START)
    assert _count(engine, api_keys) == 2  # the tenant's two admin keys
    with engine.begin() as conn:
        create_key(conn, made["sandbox_environment"], ["members:read"], "k" * 255, START)
    assert _count(engine, api_keys) == 3
