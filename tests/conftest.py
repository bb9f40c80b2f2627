"""Shared fixtures: real databases. SQLite always; PostgreSQL when PUNCHCARD_TEST_POSTGRES_URL is set.

PostgreSQL stays fast by migrating a template database once per test process and
creating each test's database from it with CREATE DATABASE ... TEMPLATE.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from punchcard.store.database import create_engine, migrate, open_database

POSTGRES_URL = os.environ.get("PUNCHCARD_TEST_POSTGRES_URL")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"  # the repository's own: nothing here reads outside it
EXAMPLE_PROGRAM = EXAMPLES / "programs" / "burrito-rewards.yaml"  # the demo program


def _admin() -> sa.Engine:
    assert POSTGRES_URL is not None
    return sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


def _url_for(database: str) -> str:
    assert POSTGRES_URL is not None
    return sa.make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("PUNCHCARD_TEST_POSTGRES_URL is not set")
    name = f"punchcard_tpl_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = create_engine(_url_for(name))
    migrate(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    name = f"punchcard_t_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    yield _url_for(name)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/punchcard.sqlite3"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on both databases."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = open_database(database_url)
    yield engine
    engine.dispose()
