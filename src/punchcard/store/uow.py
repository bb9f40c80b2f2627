"""The unit of work: one database transaction per use case, rolled back unless committed.

Domain events recorded during the use case are written to the outbox in the same
transaction, each numbered in its member's sequence, so an event exists if and only
if its change committed. Nothing is published from inside a transaction.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from punchcard.store import hot
from punchcard.store.database import reading
from punchcard.store.tables import members, outbox

# Hot-path statements are built once (SQLAlchemy then reuses their compiled form cheaply).
_BUMP_EVENT_SEQ = (
    sa.update(members)
    .where(members.c.id == sa.bindparam("b_member"))
    .values(event_seq=members.c.event_seq + sa.bindparam("b_count"))
    .returning(members.c.event_seq)
)
_INSERT_OUTBOX = sa.insert(outbox)
# PostgreSQL numbers and writes a transaction's events in one statement: each member's
# sequence bumped once by its count, then the events inserted in order (their ids, which
# senders follow, in that order too), event k of a member numbered base + k.
_NUMBER_AND_INSERT = sa.text(
    "WITH bump AS ("
    " UPDATE members SET event_seq = members.event_seq + b.n"
    " FROM unnest(CAST(:ids AS integer[]), CAST(:counts AS bigint[])) AS b(id, n)"
    " WHERE members.id = b.id RETURNING members.id, members.event_seq - b.n AS base)"
    " INSERT INTO outbox (env_id, member_id, member_seq, type, payload, created_at)"
    " SELECT :env, e.member_id, bump.base + e.k, e.type, CAST(e.payload AS json), e.at"
    " FROM unnest(CAST(:members AS integer[]), CAST(:ks AS bigint[]), CAST(:types AS text[]),"
    " CAST(:payloads AS text[]), CAST(:ats AS timestamptz[])) WITH ORDINALITY"
    " AS e(member_id, k, type, payload, at, n)"
    " LEFT JOIN bump ON bump.id = e.member_id ORDER BY e.n"
)


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # past tense, dotted: points.posted, tier.changed, ...
    at: datetime
    payload: dict[str, Any]
    member_id: int | None = None


@dataclass
class UnitOfWork:
    engine: sa.Engine
    env_id: str
    read_only: bool = False  # reads take no write lock on SQLite
    events: list[Event] = field(default_factory=list)
    # What this transaction already read and can not change under it (program versions).
    memo: dict[Any, Any] = field(default_factory=dict)
    _connection: sa.Connection | None = None
    _transaction: sa.RootTransaction | None = None

    def __enter__(self) -> UnitOfWork:
        self._connection = reading(self.engine) if self.read_only else self.engine.connect()
        self._transaction = self._connection.begin()
        self.events = []
        self.memo = {}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._connection is not None and self._transaction is not None
        if self._transaction.is_active:
            self._transaction.rollback()
        self._connection.close()
        self._connection = self._transaction = None

    @property
    def conn(self) -> sa.Connection:
        assert self._connection is not None, "use the unit of work inside a with block"
        return self._connection

    def record(self, event: Event) -> None:
        self.events.append(event)

    def commit(self) -> None:
        assert self._transaction is not None
        self._write_outbox()
        hot.commit(self.conn, self._transaction)

    def _write_outbox(self) -> None:
        # One sequence bump per member, however many of its events: numbers run in event order.
        if not self.events:
            return
        counts = Counter(e.member_id for e in self.events if e.member_id is not None)
        if self.conn.dialect.name == "postgresql":
            self._number_and_insert(counts)
            return
        next_seq = {}
        for member_id, count in counts.items():
            last = self.conn.execute(
                _BUMP_EVENT_SEQ, {"b_member": member_id, "b_count": count}
            ).scalar_one()
            next_seq[member_id] = last - count + 1
        rows = []
        for event in self.events:
            seq = None
            if event.member_id is not None:
                seq = next_seq[event.member_id]
                next_seq[event.member_id] += 1
            rows.append(
                {
                    "env_id": self.env_id,
                    "member_id": event.member_id,
                    "member_seq": seq,
                    "type": event.type,
                    "payload": event.payload,
                    "created_at": event.at,
                }
            )
        self.conn.execute(_INSERT_OUTBOX, rows)
        self.events = []

    def _number_and_insert(self, counts: Counter[int]) -> None:
        """PostgreSQL: the bumps and the events in one round trip (`_NUMBER_AND_INSERT`)."""
        seen: Counter[int | None] = Counter()
        ks = []
        for event in self.events:
            seen[event.member_id] += 1
            ks.append(seen[event.member_id])
        hot.later(
            self.conn,
            _NUMBER_AND_INSERT,
            {
                "ids": list(counts),
                "counts": list(counts.values()),
                "env": self.env_id,
                "members": [e.member_id for e in self.events],
                "ks": ks,
                "types": [e.type for e in self.events],
                "payloads": [json.dumps(e.payload) for e in self.events],
                "ats": [e.at for e in self.events],
            },
        )
        self.events = []
