"""Numbers handed out in order: the close order that postings follow (spec rule 14)."""

from __future__ import annotations

import sqlalchemy as sa

from punchcard.store.tables import environments

NEXT_CLOSE_SEQ = sa.func.nextval("order_close_seq", type_=sa.BigInteger)  # PostgreSQL's


def next_close_seq(conn: sa.Connection, env_id: str) -> int | sa.ColumnElement[int]:
    """The next number in close order, as a value to write. Numbers only grow; gaps are
    possible on PostgreSQL, where it is `nextval` in the writing statement itself.

    The caller holds the member's lock, so one member's closes are numbered in commit order,
    which is the order that matters: postings of different members don't interact."""
    if conn.dialect.name == "postgresql":
        return NEXT_CLOSE_SEQ
    return int(
        conn.execute(
            sa.update(environments)
            .where(environments.c.id == env_id)
            .values(close_seq=environments.c.close_seq + 1)
            .returning(environments.c.close_seq)
        ).scalar_one()
    )
