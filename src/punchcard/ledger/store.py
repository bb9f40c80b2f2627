"""Writing ledger entries: accounts made on first use, postings appended, balances cached.

The cached balance is updated in the same transaction as the postings, so it always
equals their sum; `punchcard.ledger.audit` recomputes it to prove so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from punchcard.ledger.entries import SYSTEM_ACCOUNTS, Entry
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
    .returning(ledger_accounts.c.id, ledger_accounts.c.balance)
)
_ACCOUNT_ID = sa.select(ledger_accounts.c.id).where(*_ACCOUNT)
_MOVE_BY_ID = (
    sa.update(ledger_accounts)
    .where(ledger_accounts.c.id == sa.bindparam("b_id"))
    .values(balance=ledger_accounts.c.balance + sa.bindparam("b_amount"))
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


def write(
    conn: sa.Connection,
    env_id: str,
    entry: Entry,
    at: datetime,
    later: dict[int, int] | None = None,
) -> dict[str, int]:
    """Append one balanced transaction and move the cached balances with it; returns each
    account's balance after the move.

    With `later` (a unit of work's), the system accounts' balances (`earned`, `spent`, ...)
    are not moved here: their moves are added to `later` (account id: amount), for the unit
    of work to make at commit, in account id order (`apply_later`), and their balances are
    not returned. Every posting moves `earned`: moved at once, that row was held from the
    posting to the commit, and a request that expired then posted waited on one that posted
    then expired, and each on the other (a deadlock). Moved at commit in one order, a system
    row is held only for the commit, and never in a cycle."""
    params = {
        "env_id": env_id,
        "asset": entry.asset,
        "kind": entry.kind,
        "reference": entry.reference,
        "at": at,
    }
    names = [name for name, _ in entry.postings]
    # One statement on PostgreSQL, unless an account is named twice (one UPDATE moves it once).
    if conn.dialect.name == "postgresql" and len(set(names)) == len(names):
        return _write_at_once(conn, entry, params, later)
    txn_id = conn.execute(_INSERT_TRANSACTION, params).scalar_one()
    return _write_legs(conn, env_id, entry.asset, txn_id, entry.postings, later)


def apply_later(conn: sa.Connection, later: dict[int, int]) -> None:
    """Make the system accounts' moves that `write` left for the commit, in account id order
    (one order for every transaction: no two wait on each other for these rows)."""
    for account_id in sorted(later):
        if later[account_id]:
            conn.execute(_MOVE_BY_ID, {"b_id": account_id, "b_amount": later[account_id]})
    later.clear()


def _write_legs(
    conn: sa.Connection,
    env_id: str,
    asset: str,
    txn_id: int,
    legs: Sequence[tuple[str, int]],
    later: dict[int, int] | None,
) -> dict[str, int]:
    rows, balances = [], {}
    for name, amount in legs:
        if later is not None and name in SYSTEM_ACCOUNTS:
            acct = _account_id(conn, env_id, asset, name)
            later[acct] = later.get(acct, 0) + amount
        else:
            acct, balances[name] = _move_balance(conn, env_id, asset, name, amount)
        rows.append({"transaction_id": txn_id, "account_id": acct, "amount": amount})
    conn.execute(_INSERT_POSTINGS, rows)
    return balances


# PostgreSQL writes a whole transaction in one round trip: the transaction row, every
# existing account's balance, and their postings (in the legs' order). An account used for
# the first time is made, moved and posted afterwards, in the same database transaction.
_WRITE_AT_ONCE = sa.text(
    """
    WITH legs AS (
        SELECT * FROM unnest(
            CAST(:names AS text[]), CAST(:amounts AS bigint[]), CAST(:later AS boolean[])
        ) WITH ORDINALITY AS leg(name, amount, later, n)
    ), moved AS (
        UPDATE ledger_accounts AS a SET balance = a.balance + legs.amount
        FROM legs
        WHERE a.env_id = :env_id AND a.asset = :asset AND a.name = legs.name AND NOT legs.later
        RETURNING a.id, a.name, a.balance, legs.amount, legs.n
    ), kept AS (
        SELECT a.id, a.name, CAST(NULL AS bigint) AS balance, legs.amount, legs.n
        FROM ledger_accounts AS a JOIN legs ON a.name = legs.name
        WHERE a.env_id = :env_id AND a.asset = :asset AND legs.later
    ), legged AS (
        SELECT * FROM moved UNION ALL SELECT * FROM kept
    ), txn AS (
        INSERT INTO ledger_transactions (env_id, asset, kind, reference, at)
        VALUES (:env_id, :asset, :kind, :reference, :at)
        RETURNING id
    ), posted AS (
        INSERT INTO ledger_postings (transaction_id, account_id, amount)
        SELECT txn.id, legged.id, legged.amount FROM txn, legged ORDER BY legged.n
    )
    SELECT txn.id AS txn_id, legged.id AS account_id, legged.name, legged.balance,
        legged.amount
    FROM txn LEFT JOIN legged ON true
    """
).bindparams(sa.bindparam("at", type_=ledger_transactions.c.at.type))


def _write_at_once(
    conn: sa.Connection, entry: Entry, params: dict[str, Any], later: dict[int, int] | None
) -> dict[str, int]:
    rows = conn.execute(
        _WRITE_AT_ONCE,
        {
            **params,
            "names": [name for name, _ in entry.postings],
            "amounts": [amount for _, amount in entry.postings],
            "later": [later is not None and name in SYSTEM_ACCOUNTS for name, _ in entry.postings],
        },
    ).all()
    balances, found = {}, set()
    for row in rows:
        if row.name is None:
            continue  # no account of the entry existed yet
        found.add(row.name)
        if row.balance is None:
            assert later is not None
            later[row.account_id] = later.get(row.account_id, 0) + int(row.amount)
        else:
            balances[row.name] = int(row.balance)
    missing = [(name, amount) for name, amount in entry.postings if name not in found]
    if missing:
        balances |= _write_legs(conn, params["env_id"], entry.asset, rows[0].txn_id, missing, later)
    return balances


def _account_id(conn: sa.Connection, env_id: str, asset: str, name: str) -> int:
    """An account's id, made on first use; its row is not locked (nothing of it moves here)."""
    key = {"b_env": env_id, "b_asset": asset, "b_name": name}
    found = conn.execute(_ACCOUNT_ID, key).scalar()
    if found is not None:
        return int(found)
    conn.execute(
        insert_new(conn, ledger_accounts),
        {"env_id": env_id, "asset": asset, "name": name, "balance": 0},
    )
    return int(conn.execute(_ACCOUNT_ID, key).scalar_one())


def _move_balance(
    conn: sa.Connection, env_id: str, asset: str, name: str, amount: int
) -> tuple[int, int]:
    """Add `amount` to an account's cached balance; returns its id and new balance: one round
    trip once the account exists, which is every time but the first."""
    moved = conn.execute(
        _MOVE_BALANCE, {"b_env": env_id, "b_asset": asset, "b_name": name, "b_amount": amount}
    ).first()
    if moved is not None:
        return int(moved.id), int(moved.balance)
    conn.execute(  # made on first use (or by a concurrent writer just now)
        insert_new(conn, ledger_accounts),
        {"env_id": env_id, "asset": asset, "name": name, "balance": 0},
    )
    return _move_balance(conn, env_id, asset, name, amount)
