"""Writing ledger entries: accounts made on first use, postings appended, balances cached.

A member's, card's or hold's cached balance is updated in the same transaction as its
postings, so it always equals their sum; `punchcard audit` recomputes it to prove so. A
system account's (`earned`, `spent`, ...) is not cached (its `balance` is NULL): it is the
sum of its postings, read when asked for. Every posting of an environment moves one, so a
cached one was a row every posting updated and held to its commit (migration 0013).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from punchcard.ledger.entries import SYSTEM_ACCOUNTS, Entry
from punchcard.store import hot
from punchcard.store.database import insert_new
from punchcard.store.tables import ledger_accounts, ledger_postings, ledger_transactions

# Hot-path statements are built once (SQLAlchemy then reuses their compiled form cheaply).
_ACCOUNT = (
    ledger_accounts.c.env_id == sa.bindparam("b_env"),
    ledger_accounts.c.asset == sa.bindparam("b_asset"),
    ledger_accounts.c.name == sa.bindparam("b_name"),
)
_BALANCE = sa.select(ledger_accounts.c.balance).where(*_ACCOUNT)
_DERIVED_BALANCE = (
    sa.select(sa.func.coalesce(sa.func.sum(ledger_postings.c.amount), 0))
    .select_from(ledger_accounts)
    .join(ledger_postings, ledger_postings.c.account_id == ledger_accounts.c.id)
    .where(*_ACCOUNT)
)
_MOVE_BALANCE = (
    sa.update(ledger_accounts)
    .where(*_ACCOUNT)
    .values(balance=ledger_accounts.c.balance + sa.bindparam("b_amount"))
    .returning(ledger_accounts.c.id, ledger_accounts.c.balance)
)
_ACCOUNT_ID = sa.select(ledger_accounts.c.id).where(*_ACCOUNT)
_INSERT_TRANSACTION = sa.insert(ledger_transactions).returning(ledger_transactions.c.id)
_INSERT_POSTINGS = sa.insert(ledger_postings)


def balance(conn: sa.Connection, env_id: str, asset: str, name: str) -> int:
    """An account's balance: cached, or for a system account the sum of its postings."""
    key = {"b_env": env_id, "b_asset": asset, "b_name": name}
    found = conn.execute(_DERIVED_BALANCE if name in SYSTEM_ACCOUNTS else _BALANCE, key).scalar()
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
) -> dict[str, int]:
    """Append one balanced transaction and move the cached balances with it; returns each
    cached account's balance after the move (a system account's is not cached: see above)."""
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
        return _write_at_once(conn, entry, params)
    txn_id = conn.execute(_INSERT_TRANSACTION, params).scalar_one()
    return _write_legs(conn, env_id, entry.asset, txn_id, entry.postings)


def _write_legs(
    conn: sa.Connection, env_id: str, asset: str, txn_id: int, legs: Sequence[tuple[str, int]]
) -> dict[str, int]:
    rows, balances = [], {}
    for name, amount in legs:
        if name in SYSTEM_ACCOUNTS:
            acct = _account_id(conn, env_id, asset, name)
        else:
            acct, balances[name] = _move_balance(conn, env_id, asset, name, amount)
        rows.append({"transaction_id": txn_id, "account_id": acct, "amount": amount})
    conn.execute(_INSERT_POSTINGS, rows)
    return balances


# PostgreSQL writes a whole transaction in one round trip: the transaction row, the cached
# balances it moves, and its postings (in the legs' order). Each leg finds its account by a
# lookup on the whole unique key (env_id, asset, name), and the update finds the rows by id:
# neither can scan the environment's accounts, whatever the planner knows (a join of the legs
# on name could, and did at 2,000 members). A system account is only read, never updated. An
# account used for the first time is made and posted afterwards, in the same transaction.
_WRITE_AT_ONCE = sa.text(
    """
    WITH legs AS (
        SELECT leg.name, leg.amount, leg.n, leg.name = ANY(CAST(:derived AS text[])) AS derived,
            (SELECT a.id FROM ledger_accounts AS a
             WHERE a.env_id = :env_id AND a.asset = :asset AND a.name = leg.name) AS id
        FROM unnest(CAST(:names AS text[]), CAST(:amounts AS bigint[]))
            WITH ORDINALITY AS leg(name, amount, n)
    ), moved AS (
        UPDATE ledger_accounts AS a SET balance = a.balance + legs.amount
        FROM legs
        WHERE a.id = ANY(ARRAY(SELECT id FROM legs WHERE NOT derived)) AND a.id = legs.id
        RETURNING a.id, a.name, a.balance, legs.amount, legs.n
    ), legged AS (
        SELECT * FROM moved
        UNION ALL
        SELECT id, name, CAST(NULL AS bigint), amount, n FROM legs WHERE derived AND id IS NOT NULL
    ), txn AS (
        INSERT INTO ledger_transactions (env_id, asset, kind, reference, at)
        VALUES (:env_id, :asset, :kind, :reference, :at)
        RETURNING id
    ), posted AS (
        INSERT INTO ledger_postings (transaction_id, account_id, amount)
        SELECT txn.id, legged.id, legged.amount FROM txn, legged ORDER BY legged.n
    )
    SELECT txn.id AS txn_id, legged.name, legged.balance
    FROM txn LEFT JOIN legged ON true
    """
).bindparams(sa.bindparam("at", type_=ledger_transactions.c.at.type))


def _write_at_once(conn: sa.Connection, entry: Entry, params: dict[str, Any]) -> dict[str, int]:
    names = [name for name, _ in entry.postings]
    rows = hot.rows(
        conn,
        _WRITE_AT_ONCE,
        {
            **params,
            "names": names,
            "amounts": [amount for _, amount in entry.postings],
            "derived": [name for name in names if name in SYSTEM_ACCOUNTS],
        },
    )
    balances, found = {}, set()
    for row in rows:
        if row.name is None:
            continue  # no account of the entry existed yet
        found.add(row.name)
        if row.balance is not None:
            balances[row.name] = int(row.balance)
    missing = [(name, amount) for name, amount in entry.postings if name not in found]
    if missing:
        balances |= _write_legs(conn, params["env_id"], entry.asset, rows[0].txn_id, missing)
    return balances


def _account_id(conn: sa.Connection, env_id: str, asset: str, name: str) -> int:
    """A system account's id, made on first use; its row is neither moved nor locked."""
    key = {"b_env": env_id, "b_asset": asset, "b_name": name}
    found = conn.execute(_ACCOUNT_ID, key).scalar()
    if found is not None:
        return int(found)
    conn.execute(
        insert_new(conn, ledger_accounts),
        {"env_id": env_id, "asset": asset, "name": name, "balance": None},
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
