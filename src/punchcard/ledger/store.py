"""Writing ledger entries: accounts made on first use, postings appended, balances cached.

The cached balance is updated in the same transaction as the postings, so it always
equals their sum; `punchcard.ledger.audit` recomputes it to prove so.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from punchcard.ledger.entries import Entry
from punchcard.store.tables import ledger_accounts, ledger_postings, ledger_transactions


def account_id(conn: sa.Connection, env_id: str, asset: str, name: str) -> int:
    found = conn.execute(
        sa.select(ledger_accounts.c.id).where(
            ledger_accounts.c.env_id == env_id,
            ledger_accounts.c.asset == asset,
            ledger_accounts.c.name == name,
        )
    ).scalar()
    if found is not None:
        return int(found)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(ledger_accounts)
        .values(env_id=env_id, asset=asset, name=name, balance=0)
        .on_conflict_do_nothing()
    )
    return account_id(conn, env_id, asset, name)


def balance(conn: sa.Connection, env_id: str, asset: str, name: str) -> int:
    found = conn.execute(
        sa.select(ledger_accounts.c.balance).where(
            ledger_accounts.c.env_id == env_id,
            ledger_accounts.c.asset == asset,
            ledger_accounts.c.name == name,
        )
    ).scalar()
    return int(found or 0)


def snapshot(conn: sa.Connection) -> None:
    """Make every later read of this transaction see one snapshot (call it first).

    SQLite in WAL mode does so already (a read transaction keeps the snapshot of its first
    read); PostgreSQL's default, READ COMMITTED, takes a new snapshot per statement.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")


def write(conn: sa.Connection, env_id: str, entry: Entry, at: datetime) -> int:
    """Append one balanced transaction and move the cached balances with it."""
    txn_id = conn.execute(
        sa.insert(ledger_transactions)
        .values(env_id=env_id, asset=entry.asset, kind=entry.kind, reference=entry.reference, at=at)
        .returning(ledger_transactions.c.id)
    ).scalar_one()
    rows = []
    for name, amount in entry.postings:
        acct = account_id(conn, env_id, entry.asset, name)
        rows.append({"transaction_id": txn_id, "account_id": acct, "amount": amount})
        conn.execute(
            sa.update(ledger_accounts)
            .where(ledger_accounts.c.id == acct)
            .values(balance=ledger_accounts.c.balance + amount)
        )
    conn.execute(sa.insert(ledger_postings), rows)
    return int(txn_id)
