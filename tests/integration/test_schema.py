"""The migrations produce exactly the schema that store/tables.py declares."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from punchcard.audit import run_audit
from punchcard.store.database import MIGRATIONS, migrate, migrating
from punchcard.store.tables import metadata, orders, program_versions

from .helpers import START, burritos, new_app


def test_migrations_match_the_declared_tables(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_migrating_twice_changes_nothing(engine: sa.Engine) -> None:
    migrate(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head


@pytest.mark.parametrize("bottom", ["0006", "0001"])
def test_the_migrations_carry_a_database_that_holds_data(engine: sa.Engine, bottom: str) -> None:
    """Down to 0006 (or to the first migration) and up again with a member, a posted order
    and a version in it: columns added later are filled from what is there. On SQLite a
    migration that copies a table (0002 adds constraints so) tripped over the rows that
    refer to it; and 0007 to 0009 change tables in place."""
    app = new_app(engine)
    app.enroll({"member": "ann"}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)
    app.run_due(START + timedelta(hours=1))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    for target in (bottom, "head"):
        with migrating(engine) as connection:
            config.attributes["connection"] = connection
            (command.downgrade if target == bottom else command.upgrade)(config, target)
    with engine.connect() as conn:
        assert conn.execute(
            sa.select(orders.c.window_points, orders.c.window_visit, orders.c.window_spend)
        ).one() == (300, 1, 3000)
        assert conn.execute(sa.select(program_versions.c.planned)).scalars().all() == [True]
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    later = START + timedelta(days=1)
    app.refund_order({"order": "o1", "all": True}, later)  # takes back all it added
    assert app.member("ann", later).posted == 0
    assert [f.check for f in run_audit(engine, later) if not f.ok] == []
