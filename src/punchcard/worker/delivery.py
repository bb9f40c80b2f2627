"""Webhook delivery: signed (Standard Webhooks), retried on a schedule, never lost.

A deliverer claims one endpoint at a time (`FOR UPDATE SKIP LOCKED`, then a lease),
so each endpoint gets one sender: a slow receiver slows only its own endpoint, and
the API never waits for any of it. Each batch is the endpoint's due retries and then
the outbox events after its cursor; the cursor moves past the events tried, once, in
the transaction that records the batch. A first try that succeeds leaves no row but a
count; one that fails becomes a message, a delivery and an attempt, retried from then
on. A sender killed mid-batch has moved nothing: its lease expires and the batch is sent
again (at least once: receivers dedupe on `webhook-id`).

The first attempt is made at once; after each failed one the next waits 5 s, 5 min,
30 min, 2 h, 5 h, 10 h, 10 h (a longer `Retry-After` wins); after the eighth, the message
is dead-lettered. An attempt whose record fails is recorded again plainly (status and
latency only), so it still counts and backs off: never sent again every round.
A 410 disables the endpoint; so does failing for 5 days.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from standardwebhooks import Webhook

from punchcard.retry_after import retry_after_s
from punchcard.services.clock import Clock, SystemClock
from punchcard.services.webhooks import (
    EVENTS,
    Horizon,
    after,
    make_messages,
    signing_secrets,
    the_message,
)
from punchcard.store import hot
from punchcard.store.database import insert_new, single_statement
from punchcard.store.tables import (
    environments,
    outbox,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_messages,
)
from punchcard.worker.deadline import Transport, within
from punchcard.worker.egress import PublicOnlyTransport

log = logging.getLogger("punchcard.webhooks")
RETRY_DELAYS_S = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)  # before attempts 1..8
DISABLE_AFTER = timedelta(days=5)
ENDPOINT_LEASE = timedelta(seconds=120)
PER_ROUND = 32  # deliveries sent per batch (how long one may take: see QUICK_MS)
IN_FLIGHT = 8  # POSTs to one endpoint at once (receivers dedupe on webhook-id, order not promised)
# A batch is sent one POST at a time on the sender's own thread while the endpoint answers
# within QUICK_MS: handing POSTs to IN_FLIGHT threads costs more CPU (each hand-off and GIL
# switch) than so quick a receiver makes anyone wait, and is slower too (bench/delivery.py).
# Two slower answers in a row (one could be a pause of ours) hand the rest of the batch to
# the posters, and the endpoint's next batches for SLOW_FOR_S go to them at once. A batch
# still ends within 2 + PER_ROUND / IN_FLIGHT timeouts (plus PER_ROUND x QUICK_MS): 60 s,
# half the lease renewed before it.
QUICK_MS = 5
SLOW_FOR_S = 30.0
SLOW_IN_A_ROW = 2
MAX_RETRY_AFTER_S = 36000.0  # a receiver may ask to wait, up to the schedule's longest pause
EXCERPT = 300


def claim_endpoints(
    engine: sa.Engine, now: datetime, limit: int, lease: timedelta = ENDPOINT_LEASE
) -> list[Any]:
    """Endpoints with a due retry or an event after their cursor that no other sender holds,
    leased to the caller, in random order: with more endpoints at work than senders free,
    none is passed over round after round.

    Starts from the enabled endpoints, each looking for its work by an index, so events
    waiting for a disabled endpoint cost nothing here."""
    retry_due = sa.exists().where(
        webhook_deliveries.c.endpoint_id == webhook_endpoints.c.id,
        webhook_deliveries.c.state == "pending",
        webhook_deliveries.c.next_attempt_at <= now,
    )
    # The first event after the cursor, in (tx, id) order, is of a finished transaction (then
    # so are all before the horizon): an index scan that stops at its first row. (`EXISTS`,
    # with the cursor taken from the outer row, was planned as a sequential scan of the
    # outbox: 0.15 s a round with four million events.)
    first_after = (
        sa.select(outbox.c.tx)
        .where(
            outbox.c.env_id == webhook_endpoints.c.env_id,
            after(
                outbox.c.tx,
                outbox.c.id,
                webhook_endpoints.c.cursor_tx,
                webhook_endpoints.c.cursor_id,
            ),
        )
        .order_by(outbox.c.tx, outbox.c.id)
        .limit(1)
        .scalar_subquery()
    )
    news = first_after < Horizon()
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(webhook_endpoints, environments.c.kind.label("env_kind"))
            .join(environments, environments.c.id == webhook_endpoints.c.env_id)
            .where(
                webhook_endpoints.c.state == "enabled",
                environments.c.deleted_at.is_(None),  # a deleted sandbox sends nothing more
                sa.or_(
                    webhook_endpoints.c.locked_until.is_(None),
                    webhook_endpoints.c.locked_until < now,
                ),
                sa.or_(news, retry_due),
            )
            .order_by(sa.func.random())
            .limit(limit)
            .with_for_update(skip_locked=True, of=webhook_endpoints)
        ).all()
        if rows:
            conn.execute(
                sa.update(webhook_endpoints)
                .where(webhook_endpoints.c.id.in_([r.id for r in rows]))
                .values(locked_until=now + lease)
            )
        return list(rows)


# A delivery is recorded only as it was when claimed: still pending, at the same scheduled
# time. Dropped meanwhile (its endpoint deleted), it stays dropped; resent meanwhile (the
# resend moved its time), the resend stands and it is sent again.
_AS_CLAIMED = (
    webhook_deliveries.c.state == "pending",
    webhook_deliveries.c.next_attempt_at
    == sa.bindparam("claimed", type_=webhook_deliveries.c.next_attempt_at.type),
)


def next_delay(attempts: int, retry_after_s: float | None) -> float | None:
    """Seconds until the next attempt after `attempts` failures; None when they are used up."""
    if attempts >= len(RETRY_DELAYS_S):
        return None
    delay = float(RETRY_DELAYS_S[attempts])
    return max(delay, retry_after_s) if retry_after_s is not None else delay


def _retry_after(response: httpx.Response | None, now: datetime) -> float | None:
    asked = None if response is None else retry_after_s(response.headers.get("retry-after"), now)
    return None if asked is None else min(asked, MAX_RETRY_AFTER_S)


def _excerpt(response: httpx.Response) -> str:
    """The first EXCERPT bytes of an answer's body, or what came of them in time: the
    status is in, and the body is only ever kept as this excerpt."""
    data = b""
    try:
        for chunk in response.iter_raw():  # as sent: never inflated past the excerpt
            data += chunk
            if len(data) >= EXCERPT:
                break
    except httpx.TimeoutException:
        pass
    return _storable(data[:EXCERPT].decode("utf-8", "replace"))


def _storable(text: str) -> str:
    """PostgreSQL text holds no NUL: one in an answer (or an error naming a URL) would fail
    the record of its attempt, and the message would be sent again for ever."""
    return text.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class Fresh:
    """An event after the cursor, sent for the first time: it gets rows only if it fails."""

    event: Any
    message_id: str
    body: str


# An endpoint's due retries (and resends), oldest first, each with the body it is sent with.
_DUE = (
    sa.select(webhook_deliveries, webhook_messages.c.body)
    .join(webhook_messages, webhook_messages.c.id == webhook_deliveries.c.message_id)
    .where(
        webhook_deliveries.c.endpoint_id == sa.bindparam("endpoint"),
        webhook_deliveries.c.state == "pending",
        webhook_deliveries.c.next_attempt_at
        <= sa.bindparam("now", type_=webhook_deliveries.c.next_attempt_at.type),
    )
    .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
    .limit(PER_ROUND)
)


def subscribed(endpoint: Any, kind: str) -> bool:
    return not endpoint.event_types or kind in endpoint.event_types


def moved_to(
    cursor: tuple[int, int], endpoint: Any, events: Sequence[Any], tried: set[str]
) -> tuple[int, int]:
    """Where the cursor goes after a batch: past every event read up to the first one it
    wanted that was not tried (a 410 stopped the batch), which waits for the next."""
    for event in events:
        if subscribed(endpoint, event.type) and the_message(event)[0] not in tried:
            break
        cursor = (event.tx, event.id)
    return cursor


@dataclass(frozen=True)
class Attempt:
    delivery: Any  # a delivery row (a retry or resend), or a Fresh event
    response: httpx.Response | None
    error: str | None
    latency_ms: int
    excerpt: str | None = None  # the start of the answer's body
    plain: bool = False  # recorded by status and latency only: excerpt and Retry-After left out

    def plainly(self) -> Attempt:
        """This attempt without what the receiver wrote beyond its status, nor the error's
        text (the exception's name stays): when recording it in full failed."""
        error = None if self.error is None else self.error.split(":", 1)[0]
        return replace(self, excerpt=None, error=error, plain=True)

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


class Deliverer:
    def __init__(
        self,
        engine: sa.Engine,
        clock: Clock,
        *,
        allow_private: bool = False,
        threads: int = 8,
        timeout_s: float = 10.0,
        signing_clock: Clock | None = None,
        lease: timedelta = ENDPOINT_LEASE,
    ) -> None:
        self.lease = lease
        self.engine = engine
        self.clock = clock  # schedules attempts (a test may drive it)
        # Signatures carry the real send time: receivers check it against their own clocks.
        self.signing_clock = signing_clock or SystemClock()
        self.allow_private = allow_private
        self.threads = threads
        self.timeout_s = timeout_s
        # Transports, not clients: a webhook follows no redirect and keeps no cookie a
        # receiver sets, and the client's layers (URL merging, cookie jar, auth, hooks) cost
        # a sender's every POST for nothing.
        self.timeouts = httpx.Timeout(timeout_s).as_dict()
        self.http = Transport()  # sandboxes
        self.public_http = PublicOnlyTransport()  # live: connects to public addresses only
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads)) if threads > 1 else None
        # The POSTs of every endpoint, IN_FLIGHT at most each: made once, not per batch.
        self.posters = (
            ThreadPoolExecutor(max_workers=threads * IN_FLIGHT, thread_name_prefix="webhook-post")
            if threads > 1
            else None
        )
        self.sending: set[Future[int]] = set()
        self.slow_until: dict[str, float] = {}  # endpoint: when to try it in place again

    def run_once(self) -> int:
        """Claim endpoints with due retries or events after their cursors, and send.

        With one thread it sends in place and returns the attempts made. With more, each
        endpoint goes to a free thread and this returns at once (the endpoints started): a
        slow endpoint keeps only its own thread busy while the next rounds serve the others.
        """
        if self.pool is None:
            now = self.clock.now()
            endpoints = claim_endpoints(self.engine, now, 1, self.lease)
            return sum(self.send_endpoint(e, now + self.lease) for e in endpoints)
        self.sending = {f for f in self.sending if not f.done()}
        free = self.threads - len(self.sending)
        if free <= 0:
            return 0
        now = self.clock.now()
        endpoints = claim_endpoints(self.engine, now, free, self.lease)
        for endpoint in endpoints:
            self.sending.add(self.pool.submit(self.send_endpoint, endpoint, now + self.lease))
        return len(endpoints)

    def drain(self) -> None:
        """Wait for the sends under way (for tests and shutdown)."""
        for future in list(self.sending):
            future.exception()

    def run_forever(self, interval_s: float = 0.2) -> None:
        while not self.stopping.is_set():
            busy = 0
            try:
                busy = self.run_once()
            except sa.exc.OperationalError:
                log.warning("database unavailable; retrying", exc_info=True)
            except Exception:  # one receiver's oddity must not stop delivery for everyone
                log.exception("a delivery round failed; the next round retries")
            if not busy:  # pause only when there was nothing to start
                self.stopping.wait(interval_s)

    def stop(self) -> None:
        self.stopping.set()
        for pool in (self.pool, self.posters):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def send_endpoint(self, endpoint: Any, held: datetime) -> int:
        """Send to a claimed endpoint whose lease runs until `held`, then give the lease back,
        unless another sender has it by then (this one's lapsed)."""
        lease = [held]
        try:  # an unexpected error is logged; the endpoint's lease is still released
            return self._send_endpoint(endpoint, lease)
        except Exception:
            log.exception("sending to endpoint %s failed", endpoint.id)
            return 0
        finally:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(webhook_endpoints)
                    .where(
                        webhook_endpoints.c.id == endpoint.id,
                        webhook_endpoints.c.locked_until == lease[0],
                    )
                    .values(locked_until=None)
                )

    def _renew(self, endpoint_id: str, held: datetime) -> datetime | None:
        """Extend this sender's lease before a batch; None when the endpoint was disabled or
        deleted meanwhile (nothing more is sent to it), or its lease lapsed and another sender
        took it (only one sends at a time)."""
        until = self.clock.now() + self.lease
        with self.engine.begin() as conn:
            renewed = conn.execute(
                sa.update(webhook_endpoints)
                .where(
                    webhook_endpoints.c.id == endpoint_id,
                    webhook_endpoints.c.locked_until == held,
                    webhook_endpoints.c.state == "enabled",
                    webhook_endpoints.c.deleted_at.is_(None),
                )
                .values(locked_until=until)
            ).rowcount
        return until if renewed else None

    def _send_endpoint(self, endpoint: Any, lease: list[datetime]) -> int:
        """Send an endpoint's due retries, then the events after its cursor, in batches of
        PER_ROUND: up to `in_flight` POSTs at once, each batch's outcomes recorded and the
        cursor moved in one transaction, until nothing is due or the lease's first half is
        spent (a batch takes at most PER_ROUND / in_flight timeouts). The lease is renewed
        before each batch, which also stops at once an endpoint disabled or deleted
        meanwhile."""
        sent = 0
        began = time.monotonic()
        allow_private = self.allow_private or endpoint.env_kind != "live"
        cursor = (int(endpoint.cursor_tx), int(endpoint.cursor_id))
        while time.monotonic() - began < self.lease.total_seconds() / 2:
            renewed = self._renew(endpoint.id, lease[0])
            if renewed is None:
                break
            lease[0] = renewed
            now = self.clock.now()
            with single_statement(self.engine) as conn:
                # Both on psycopg, prepared (store/hot.py): a sender reads these every batch.
                due = hot.rows(conn, _DUE, {"endpoint": endpoint.id, "now": now})
                events: list[Any] = []
                if len(due) < PER_ROUND:
                    events = hot.rows(
                        conn,
                        EVENTS,
                        {
                            "env": endpoint.env_id,
                            "tx": cursor[0],
                            "last": cursor[1],
                            "limit": PER_ROUND - len(due),
                        },
                    )
            if not due and not events:
                break
            batch: list[Any] = [*due] + [
                Fresh(e, *the_message(e)) for e in events if subscribed(endpoint, e.type)
            ]
            tries = self._send_batch(endpoint, batch, allow_private, now) if batch else []
            tried = {t.delivery.message_id for t in tries if isinstance(t.delivery, Fresh)}
            move = (cursor, moved_to(cursor, endpoint, events, tried))
            # Recorded, and the next attempts planned, from when the batch ended: a retry
            # 5 s after a 10 s timeout waits 5 s, not none.
            ended = self.clock.now()
            try:
                kept = self._record(endpoint, tries, ended, move)
            except Exception:  # unrecorded, the batch would be due again every round
                log.exception("recording attempts to endpoint %s failed", endpoint.id)
                kept = self._record(endpoint, [t.plainly() for t in tries], ended, move)
            if not kept:
                return sent + len(tries) - 1  # the attempt that disabled it is not counted
            sent += len(tries)
            cursor = move[1]
            if len(due) + len(events) < PER_ROUND:
                break
        return sent

    def _send_batch(
        self, endpoint: Any, due: Sequence[Any], allow_private: bool, now: datetime
    ) -> list[Attempt]:
        """POST a batch in its order: one at a time in place (with one thread, always), the
        rest up to IN_FLIGHT at once on the deliverer's long-lived posters (no pool made per
        batch) once the endpoint has answered slower than QUICK_MS twice in a row. A 410 stops
        what has not started yet."""
        tries: list[Attempt] = []
        slow = time.monotonic() < self.slow_until.get(endpoint.id, 0.0)
        if self.posters is None or not slow:
            for delivery in due:
                tries.append(self._post(endpoint, delivery, allow_private, now))
                if tries[-1].status == 410:
                    return tries
                last = tries[-SLOW_IN_A_ROW:]
                if (
                    self.posters is not None
                    and len(last) == SLOW_IN_A_ROW
                    and all(t.latency_ms >= QUICK_MS for t in last)
                ):
                    self.slow_until[endpoint.id] = time.monotonic() + SLOW_FOR_S
                    break
        rest = due[len(tries) :]
        return tries + (self._concurrently(endpoint, rest, allow_private, now) if rest else [])

    def _concurrently(
        self, endpoint: Any, due: Sequence[Any], allow_private: bool, now: datetime
    ) -> list[Attempt]:
        """Up to IN_FLIGHT posters, each taking the batch's next delivery in order until none
        is left or one answered 410: a hand-off per poster, not per POST."""
        assert self.posters is not None
        done: list[Attempt | None] = [None] * len(due)
        taken = iter(range(len(due)))
        lock = threading.Lock()
        gone = threading.Event()

        def post_in_turn() -> None:
            while not gone.is_set():
                with lock:
                    index = next(taken, None)
                if index is None:
                    return
                done[index] = attempt = self._post(endpoint, due[index], allow_private, now)
                if attempt.status == 410:
                    gone.set()

        posters = [self.posters.submit(post_in_turn) for _ in range(min(IN_FLIGHT, len(due)))]
        for poster in posters:
            poster.result()
        return [attempt for attempt in done if attempt is not None]

    def _post(self, endpoint: Any, delivery: Any, allow_private: bool, now: datetime) -> Attempt:
        """One signed POST; never raises for the receiver's faults. The whole request, from
        connecting to the status, and the excerpt of the body kept after it, get the timeout
        in all (`deadline.within`): a slow, trickling or huge answer holds a sender no longer."""
        response: httpx.Response | None = None
        error = excerpt = None
        started = time.monotonic()
        try:
            headers = self._headers(endpoint, delivery.message_id, delivery.body, now)
            transport = self.http if allow_private else self.public_http
            request = httpx.Request(
                "POST",
                endpoint.url,
                content=delivery.body.encode(),
                headers=headers,
                extensions={"timeout": self.timeouts},
            )
            with within(self.timeout_s):
                response = transport.handle_request(request)
                try:
                    excerpt = _excerpt(response)
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            error = _storable(f"{type(exc).__name__}: {exc}"[:EXCERPT])
        except (httpx.InvalidURL, UnicodeError) as exc:  # a URL httpx can not use (a bad
            # IDNA name, a control character): the endpoint's fault, an attempt that failed
            log.warning("could not send to endpoint %s", endpoint.id, exc_info=True)
            error = _storable(f"{type(exc).__name__}: {exc}"[:EXCERPT])
        latency_ms = int((time.monotonic() - started) * 1000)
        return Attempt(delivery, response, error, latency_ms, excerpt)

    def _record(
        self,
        endpoint: Any,
        tries: list[Attempt],
        now: datetime,
        move: tuple[tuple[int, int], tuple[int, int]] | None = None,
    ) -> bool:
        """Record a batch and schedule what comes next, in one transaction, as if its attempts
        were made one after another, and move the cursor from `move[0]` to `move[1]` (unless
        another sender moved it meanwhile). A first try that succeeded is only counted; one
        that failed gets its message, delivery and attempt rows. False: stop sending (the
        endpoint is now disabled, or another sender has its cursor)."""
        disable = None
        with self.engine.begin() as conn:
            failing_since = conn.execute(  # locked: an enable meanwhile is read, not undone
                sa.select(webhook_endpoints.c.failing_since)
                .where(webhook_endpoints.c.id == endpoint.id)
                .with_for_update(key_share=True)  # a resend's inserts still refer to it
            ).scalar()
            failed_fresh = [t for t in tries if isinstance(t.delivery, Fresh) and not t.ok]
            made = self._deliveries(conn, endpoint, failed_fresh, now)
            logged = [t for t in tries if not (isinstance(t.delivery, Fresh) and t.ok)]
            if logged:
                conn.execute(
                    sa.insert(webhook_attempts),
                    [
                        {
                            "delivery_id": made[t.delivery.message_id]
                            if isinstance(t.delivery, Fresh)
                            else t.delivery.id,
                            "at": now,
                            "status_code": t.status,
                            "latency_ms": t.latency_ms,
                            "response_excerpt": t.excerpt,
                            "error": t.error,
                        }
                        for t in logged
                    ],
                )
            delivered = [t for t in tries if t.ok and not isinstance(t.delivery, Fresh)]
            if delivered:
                conn.execute(
                    sa.update(webhook_deliveries)
                    .where(
                        webhook_deliveries.c.id == sa.bindparam("delivery"),
                        *_AS_CLAIMED,
                    )
                    .values(
                        state="delivered",
                        attempts=sa.bindparam("attempts"),
                        delivered_at=now,
                        next_attempt_at=None,
                    ),
                    [
                        {
                            "delivery": t.delivery.id,
                            "attempts": t.delivery.attempts + 1,
                            "claimed": t.delivery.next_attempt_at,
                        }
                        for t in delivered
                    ],
                )
            for t in tries:
                if t.ok:
                    failing_since = None
                    continue
                failing_since = failing_since or now
                if not isinstance(t.delivery, Fresh):
                    conn.execute(
                        sa.update(webhook_deliveries)
                        .where(webhook_deliveries.c.id == t.delivery.id, *_AS_CLAIMED)
                        .values(**self._after_failure(t, t.delivery.attempts + 1, now)),
                        {"claimed": t.delivery.next_attempt_at},
                    )
                if t.status == 410:
                    disable = "the endpoint answered 410 Gone"
                elif now - failing_since >= DISABLE_AFTER:
                    disable = "failing for 5 days"
            values: dict[str, Any] = {"failing_since": failing_since}
            if disable:
                values.update(state="disabled", disabled_reason=disable)
            ours = True
            if move is not None:
                (old_tx, old_id), (new_tx, new_id) = move
                first_sent = sum(1 for t in tries if t.ok and isinstance(t.delivery, Fresh))
                same = sa.and_(
                    webhook_endpoints.c.cursor_tx == old_tx,
                    webhook_endpoints.c.cursor_id == old_id,
                )
                values.update(
                    cursor_tx=sa.case((same, new_tx), else_=webhook_endpoints.c.cursor_tx),
                    cursor_id=sa.case((same, new_id), else_=webhook_endpoints.c.cursor_id),
                    delivered=webhook_endpoints.c.delivered + sa.case((same, first_sent), else_=0),
                )
            at = conn.execute(
                sa.update(webhook_endpoints)
                .where(webhook_endpoints.c.id == endpoint.id)
                .values(**values)
                .returning(webhook_endpoints.c.cursor_tx, webhook_endpoints.c.cursor_id)
            ).one()
            if move is not None:
                ours = tuple(at) == move[1]
        if disable:
            log.warning("webhook endpoint %s disabled: %s", endpoint.id, disable)
            return False
        return ours

    def _after_failure(self, t: Attempt, attempts: int, now: datetime) -> dict[str, Any]:
        """A failed delivery's next state: its next try on the schedule, or dead."""
        delay = next_delay(attempts, None if t.plain else _retry_after(t.response, now))
        if delay is None:
            return {"attempts": attempts, "state": "dead", "dead_at": now, "next_attempt_at": None}
        return {"attempts": attempts, "next_attempt_at": now + timedelta(seconds=delay)}

    def _deliveries(
        self, conn: sa.Connection, endpoint: Any, failed: list[Attempt], now: datetime
    ) -> dict[str, int]:
        """Message and delivery rows for first tries that failed, scheduled for their second;
        a delivery already there (a resend made it) keeps its own schedule. Their ids, by
        message."""
        if not failed:
            return {}
        make_messages(conn, endpoint.env_id, [t.delivery.event for t in failed], now)
        conn.execute(
            insert_new(conn, webhook_deliveries),
            [
                {
                    "message_id": t.delivery.message_id,
                    "endpoint_id": endpoint.id,
                    "state": "pending",
                    **self._after_failure(t, 1, now),
                }
                for t in failed
            ],
        )
        rows = conn.execute(
            sa.select(webhook_deliveries.c.message_id, webhook_deliveries.c.id).where(
                webhook_deliveries.c.endpoint_id == endpoint.id,
                webhook_deliveries.c.message_id.in_([t.delivery.message_id for t in failed]),
            )
        ).all()
        return {r.message_id: r.id for r in rows}

    def _headers(self, endpoint: Any, message_id: str, body: str, now: datetime) -> dict[str, str]:
        # Every secret valid now signs, space-separated, so a rotation never breaks a receiver.
        sent_at = self.signing_clock.now()
        signatures = [
            Webhook(s["secret"]).sign(message_id, sent_at, body)
            for s in signing_secrets(endpoint, now)
        ]
        return {
            "content-type": "application/json",
            "user-agent": "punchcard-webhooks/1",
            "accept-encoding": "identity",  # only an excerpt is kept: nothing to inflate
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": " ".join(signatures),
        }
