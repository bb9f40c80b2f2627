"""Numbers handed out in order: the close order that postings follow (docs/programs.md, rule 14)."""

from __future__ import annotations

import sqlalchemy as sa

from punchcard.store.tables import environments

# PostgreSQL's close number: `nextval` inside the statement that closes the order.
NEXT_CLOSE_SEQ = sa.func.nextval("order_close_seq", type_=sa.BigInteger)


def next_close_seq(conn: sa.Connection, env_id: str) -> int | None:
    """The next number in close order, or None on PostgreSQL, where the closing statement
    takes it with `NEXT_CLOSE_SEQ`. Numbers only grow; gaps are possible on PostgreSQL.

    The caller holds the member's lock, so one member's closes are numbered in commit order,
    which is the order that matters: postings of different members don't interact."""
    if conn.dialect.name == "postgresql":
        return None
    return int(
        conn.execute(
            sa.update(environments)
            .where(environments.c.id == env_id)
            .values(close_seq=environments.c.close_seq + 1)
            .returning(environments.c.close_seq)
        ).scalar_one()
    )
