"""A pooled PostgreSQL connection the server has closed is never handed out: the pool sees the
closed socket at checkout (no round trip) and connects afresh, so a request after a database
restart does not fail."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from punchcard.store.database import create_engine


@pytest.mark.postgres
def test_a_connection_the_server_closed_is_replaced_at_checkout(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with engine.connect() as conn:  # the pool hands the same connection back
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == first
        with admin.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_terminate_backend(%s)", (first,)).scalar()
            deadline = time.monotonic() + 10
            while conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (first,)
            ).scalar_one():
                assert time.monotonic() < deadline, "the backend did not exit"
                time.sleep(0.02)
        with engine.connect() as conn:
            second = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        assert second != first
        assert engine.pool.checkedout() == 0
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.postgres
def test_checking_out_a_live_connection_sends_nothing(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")

    def last_statement(pid: int) -> str:
        with admin.connect() as conn:
            return str(
                conn.exec_driver_sql(
                    "SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).scalar_one()
            )

    try:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        returned = last_statement(pid)  # what the pool sent as it took the connection back
        with engine.connect() as conn:
            assert last_statement(pid) == returned  # a ping would show here (";")
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == pid
    finally:
        engine.dispose()
        admin.dispose()
