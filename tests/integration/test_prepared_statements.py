"""On PostgreSQL the hot statements run as server-side prepared statements: psycopg prepares
a statement once a connection has run it 5 times, so it is parsed and planned only once."""

from __future__ import annotations

import pytest

from punchcard.store.database import open_database

from .helpers import START, burritos, new_app


@pytest.mark.postgres
def test_placing_orders_runs_on_prepared_statements(postgres_url: str) -> None:
    engine = open_database(postgres_url)
    try:
        app = new_app(engine)
        for n in range(8):
            app.enroll({"member": f"m{n}"}, START)
            app.place_order(burritos(f"o{n}", f"m{n}"), START)
        with engine.connect() as conn:  # one thread: the pool hands back the same connection
            assert conn.connection.driver_connection.prepare_threshold == 5
            prepared = conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements").all()
        statements = [row.statement for row in prepared]
        assert any(s.startswith("INSERT INTO orders ") for s in statements), statements
        assert any(s.startswith("INSERT INTO members ") for s in statements), statements
    finally:
        engine.dispose()
