"""Claiming and doing an environment's due work, safely beside other workers.

A worker claims environments by lease: `SELECT ... FOR UPDATE SKIP LOCKED` (on
PostgreSQL) picks environments nobody holds, and `lease_until` marks them taken, so
any number of workers share the work while one environment (and so one member) is
only ever processed by one of them. A crashed worker's lease expires and another
takes over; `run_due` re-checks every item, so nothing is done twice.

An idle worker is idle: each round is one read that finds the environments with work due
(`due_environments`), and only those are claimed, so nothing is written while nothing is
due. Inbound events are looked for every `INBOUND_EVERY_S` and expired idempotency keys
every `PURGE_EVERY_S`, each first with a read.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from punchcard.errors import InvalidInput
from punchcard.services.clock import Clock, environment_now
from punchcard.services.due import has_due_work, run_due
from punchcard.services.inbound import process_due as process_inbound
from punchcard.store.database import single_statement
from punchcard.store.tables import UtcDateTime, environments, idempotency_keys, inbound_events
from punchcard.store.uow import UnitOfWork

log = logging.getLogger("punchcard.worker")
LEASE = timedelta(seconds=30)
CLAIM_BATCH = 20
INBOUND_EVERY_S = 1.0  # how often an idle worker looks for inbound events to apply
PURGE_EVERY_S = 60.0  # and for idempotency keys past their 72 hours


def due_environments(engine: sa.Engine, wall: datetime, limit: int = CLAIM_BATCH) -> list[str]:
    """Free environments with work due by their own time, longest unchecked first (by the
    wall clock, as `claim` takes them): one read, with no transaction to commit."""
    now = sa.func.coalesce(environments.c.clock, sa.literal(wall, UtcDateTime))
    with single_statement(engine) as conn:
        return [
            str(i)
            for i in conn.execute(
                sa.select(environments.c.id)
                .where(
                    environments.c.deleted_at.is_(None),
                    sa.or_(environments.c.lease_until.is_(None), environments.c.lease_until < wall),
                    has_due_work(environments.c.id, now, wall),
                )
                .order_by(environments.c.checked_at.is_not(None), environments.c.checked_at)
                .limit(limit)
            ).scalars()
        ]


def claim(
    engine: sa.Engine,
    owner: str,
    now: datetime,
    env_id: str | None = None,
    lease: timedelta = LEASE,
    among: list[str] | None = None,
) -> list[str]:
    """Take the lease of environments that are free (or one named environment, or those of
    `among` that are still free)."""
    with engine.begin() as conn:
        query = (
            sa.select(environments.c.id)
            .where(
                environments.c.deleted_at.is_(None),
                sa.or_(environments.c.lease_until.is_(None), environments.c.lease_until < now),
            )
            # Longest unchecked first, by the wall clock: fair to every environment. (By how
            # far each got in its own time, sandboxes whose clocks stand in the past always
            # came first, and more than CLAIM_BATCH of them starved live ones.)
            .order_by(environments.c.checked_at.is_not(None), environments.c.checked_at)
            .limit(CLAIM_BATCH)
            .with_for_update(skip_locked=True)
        )
        if env_id is not None:
            query = query.where(environments.c.id == env_id)
        if among is not None:
            query = query.where(environments.c.id.in_(among))
        ids = [str(i) for i in conn.execute(query).scalars().all()]
        if ids:
            conn.execute(
                sa.update(environments)
                .where(environments.c.id.in_(ids))
                .values(lease_owner=owner, lease_until=now + lease)
            )
        return ids


def release(
    engine: sa.Engine,
    env_id: str,
    owner: str,
    processed_through: datetime | None,
    checked_at: datetime | None = None,
) -> None:
    values: dict[str, object] = {"lease_owner": None, "lease_until": None}
    if checked_at is not None:
        values["checked_at"] = checked_at
    if processed_through is not None:
        # Only forward: a slower worker must not move the watermark back.
        values["processed_through"] = sa.case(
            (
                sa.or_(
                    environments.c.processed_through.is_(None),
                    environments.c.processed_through < processed_through,
                ),
                sa.literal(processed_through, type_=UtcDateTime),
            ),
            else_=environments.c.processed_through,
        )
    with engine.begin() as conn:
        conn.execute(
            sa.update(environments)
            .where(environments.c.id == env_id, environments.c.lease_owner == owner)
            .values(**values)
        )


def process(engine: sa.Engine, env_id: str, clock: Clock, owner: str) -> int:
    """Do one claimed environment's due work up to its now, then record how far it got."""
    done = 0
    try:
        with single_statement(engine) as conn:
            now = environment_now(conn, env_id, clock)
        # Backoff of failed items is by the wall clock, whatever the environment's own time.
        done = run_due(lambda: UnitOfWork(engine, env_id), now, clock.now())
    except Exception:
        log.exception("due work failed in an environment; it will be retried")
        release(engine, env_id, owner, None)
        return done
    release(engine, env_id, owner, now, checked_at=clock.now())
    return done


class Worker:
    """A loop that claims environments and does their due work."""

    def __init__(
        self, engine: sa.Engine, clock: Clock, interval_s: float = 0.2, lease: timedelta = LEASE
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.interval_s = interval_s
        self.lease = lease
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self.stopping = threading.Event()
        self.next_inbound = self.next_purge = 0.0  # monotonic times of the next looks

    def run_once(self) -> int:
        done = 0
        now = self.clock.now()
        due = due_environments(self.engine, now)
        if due:  # claimed only with work: an idle round writes nothing
            for env_id in claim(self.engine, self.owner, now, lease=self.lease, among=due):
                done += process(self.engine, env_id, self.clock, self.owner)
        tick = time.monotonic()
        if tick >= self.next_inbound:
            applied = (
                process_inbound(self.engine, self.clock) if inbound_due(self.engine, now) else 0
            )
            # Events keep coming while some are applied: look again next round, not in a second.
            self.next_inbound = tick if applied else tick + INBOUND_EVERY_S
            done += applied
        if tick >= self.next_purge:
            self.next_purge = tick + PURGE_EVERY_S
            purge_idempotency_keys(self.engine, now)
        return done

    def run_forever(self) -> None:
        log.info("worker %s started", self.owner)
        while not self.stopping.is_set():
            done = 0
            try:
                done = self.run_once()
            except sa.exc.OperationalError:
                log.warning("database unavailable; retrying", exc_info=True)
            except Exception:  # a bug must not stop every tenant's due work: log, go on
                log.exception("a worker round failed; the next round retries")
            if not done:  # pause only when a round found nothing to do
                self.stopping.wait(self.interval_s)

    def stop(self) -> None:
        self.stopping.set()


class SandboxBusy(TimeoutError):
    """Another move (or a worker) held the sandbox for longer than a request waits."""


@dataclass
class Held:
    """A sandbox's lease, held for a clock move; `through` is how far its due work is done,
    `clock` the wall clock a failed item's next try is timed by."""

    owner: str
    clock: Clock
    through: datetime | None = None


@contextmanager
def sandbox_lease(
    engine: sa.Engine,
    env_id: str,
    clock: Clock,
    wait_s: float = 10.0,
    renew_s: float = LEASE.total_seconds() / 3,
) -> Iterator[Held]:
    """Hold a sandbox's lease (as a worker holds an environment's) for as long as the block
    runs: moves of one sandbox happen one at a time, each reading the clock the last left.
    A move may do years of due work: the lease is renewed every `renew_s` while it runs, so
    neither another move nor a worker takes the sandbox meanwhile."""
    held = Held(f"clock-{uuid.uuid4().hex[:12]}", clock)
    deadline = time.monotonic() + wait_s
    while not claim(engine, held.owner, clock.now(), env_id):
        if time.monotonic() > deadline:
            raise SandboxBusy("the sandbox is busy with another clock move; try again")
        time.sleep(0.02)
    done = threading.Event()
    renewer = threading.Thread(
        target=_renew_until, args=(engine, env_id, held.owner, clock, done, renew_s), daemon=True
    )
    renewer.start()
    try:
        yield held
    finally:
        done.set()
        renewer.join()
        release(engine, env_id, held.owner, held.through)


def _renew_until(
    engine: sa.Engine, env_id: str, owner: str, clock: Clock, done: threading.Event, every: float
) -> None:
    while not done.wait(every):
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.update(environments)
                    .where(environments.c.id == env_id, environments.c.lease_owner == owner)
                    .values(lease_until=clock.now() + LEASE)
                )
        except sa.exc.OperationalError:
            log.warning("could not renew a sandbox's lease; trying again", exc_info=True)


def move_clock(
    engine: sa.Engine, env_id: str, to: datetime, clock: Clock, wait_s: float = 10.0
) -> int:
    """Move a sandbox's clock forward, doing the due work on the way (under the env's lease)."""
    with sandbox_lease(engine, env_id, clock, wait_s) as held:
        return move_held(engine, env_id, to, held)


def move_held(engine: sa.Engine, env_id: str, to: datetime, held: Held) -> int:
    """Move a sandbox's clock forward under its lease, doing the due work on the way.

    The clock is read again under the lease: a move checked against the clock before another
    move finished must not take it back. An item that fails on the way is set aside (see
    services/due.py) and the clock still moves: `punchcard audit` lists it."""
    with single_statement(engine) as conn:
        current = conn.execute(
            sa.select(environments.c.clock).where(environments.c.id == env_id)
        ).scalar()
    if current is not None and to < current:
        raise InvalidInput("the clock never moves back")
    done = run_due(lambda: UnitOfWork(engine, env_id), to, held.clock.now())
    with engine.begin() as conn:
        conn.execute(sa.update(environments).where(environments.c.id == env_id).values(clock=to))
    held.through = to
    return done


def inbound_due(engine: sa.Engine, now: datetime) -> bool:
    """Whether an inbound event waits to be applied (a read, indexed on state and time)."""
    with single_statement(engine) as conn:
        found = conn.execute(
            sa.select(inbound_events.c.id)
            .where(inbound_events.c.state == "pending", inbound_events.c.next_attempt_at <= now)
            .limit(1)
        ).first()
    return found is not None


def purge_idempotency_keys(engine: sa.Engine, now: datetime) -> int:
    """Forget idempotency keys past their 72 hours (indexed on expires_at); a read first, so
    that a purge with nothing to forget writes nothing."""
    with single_statement(engine) as conn:
        expired = conn.execute(
            sa.select(idempotency_keys.c.id).where(idempotency_keys.c.expires_at < now).limit(1)
        ).first()
    if expired is None:
        return 0
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.delete(idempotency_keys).where(idempotency_keys.c.expires_at < now)
            ).rowcount
        )
