"""Writing ledger entries: accounts made on first use, postings appended, balances cached.

The cached balance is updated in the same transaction as the postings, so it always
equals their sum; `punchcard.ledger.audit` recomputes it to prove so.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from punchcard.ledger.entries import Entry
from punchcard.store.database import insert_new
from punchcard.store.tables import ledger_accounts, ledger_postings, ledger_transactions

# Hot-path statements are built once (SQLAlchemy then reuses their compiled form cheaply).
_ACCOUNT = (
    ledger_accounts.c.env_id == sa.bindparam("b_env"),
    ledger_accounts.c.asset == sa.bindparam("b_asset"),
    ledger_accounts.c.name == sa.bindparam("b_name"),
)
_BALANCE = sa.select(ledger_accounts.c.balance).where(*_ACCOUNT)
_MOVE_BALANCE = (
    sa.update(ledger_accounts)
    .where(*_ACCOUNT)
    .values(balance=ledger_accounts.c.balance + sa.bindparam("b_amount"))
    .returning(ledger_accounts.c.id)
)
_INSERT_TRANSACTION = sa.insert(ledger_transactions).returning(ledger_transactions.c.id)
_INSERT_POSTINGS = sa.insert(ledger_postings)


def balance(conn: sa.Connection, env_id: str, asset: str, name: str) -> int:
    found = conn.execute(_BALANCE, {"b_env": env_id, "b_asset": asset, "b_name": name}).scalar()
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
        _INSERT_TRANSACTION,
        {
            "env_id": env_id,
            "asset": entry.asset,
            "kind": entry.kind,
            "reference": entry.reference,
            "at": at,
        },
    ).scalar_one()
    rows = []
    for name, amount in entry.postings:
        acct = _move_balance(conn, env_id, entry.asset, name, amount)
        rows.append({"transaction_id": txn_id, "account_id": acct, "amount": amount})
    conn.execute(_INSERT_POSTINGS, rows)
    return int(txn_id)


def _move_balance(conn: sa.Connection, env_id: str, asset: str, name: str, amount: int) -> int:
    """Add `amount` to an account's cached balance and return its id: one round trip once the
    account exists, which is every time but the first."""
    moved = conn.execute(
        _MOVE_BALANCE, {"b_env": env_id, "b_asset": asset, "b_name": name, "b_amount": amount}
    ).scalar()
    if moved is not None:
        return int(moved)
    conn.execute(  # made on first use (or by a concurrent writer just now)
        insert_new(conn, ledger_accounts).values(env_id=env_id, asset=asset, name=name, balance=0)
    )
    return _move_balance(conn, env_id, asset, name, amount)
