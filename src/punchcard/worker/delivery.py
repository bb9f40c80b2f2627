"""Webhook delivery: signed (Standard Webhooks), retried on a schedule, never lost.

A deliverer claims one endpoint at a time (`FOR UPDATE SKIP LOCKED`, then a lease),
so each endpoint gets one sender: a slow receiver slows only its own endpoint, and
the API never waits for any of it. A delivery is marked delivered only after a 2xx;
a sender killed mid-delivery leaves it pending, its lease expires, and it is sent
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
from punchcard.services.webhooks import fan_out_all, signing_secrets
from punchcard.store.database import single_statement
from punchcard.store.tables import (
    environments,
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
PER_ROUND = 32  # deliveries sent per batch: 32 / 8 in flight x 10 s timeout < half the lease
IN_FLIGHT = 8  # POSTs to one endpoint at once (receivers dedupe on webhook-id, order not promised)
MAX_RETRY_AFTER_S = 36000.0  # a receiver may ask to wait, up to the schedule's longest pause
EXCERPT = 300


def claim_endpoints(
    engine: sa.Engine, now: datetime, limit: int, lease: timedelta = ENDPOINT_LEASE
) -> list[Any]:
    """Endpoints with due deliveries that no other sender holds, leased to the caller.

    Starts from the enabled endpoints, each looking up its oldest pending delivery by its
    index, so messages waiting for a disabled endpoint cost nothing here."""
    due_at = (
        sa.select(sa.func.min(webhook_deliveries.c.next_attempt_at))
        .where(
            webhook_deliveries.c.endpoint_id == webhook_endpoints.c.id,
            webhook_deliveries.c.state == "pending",
        )
        .scalar_subquery()
    )
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
                due_at <= now,
            )
            .order_by(due_at)  # the longest-waiting endpoints first
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
class Attempt:
    delivery: Any
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
        self.http = httpx.Client(  # sandboxes
            timeout=timeout_s, follow_redirects=False, transport=Transport()
        )
        self.public_http = httpx.Client(  # live: connects to public addresses only
            timeout=timeout_s, follow_redirects=False, transport=PublicOnlyTransport()
        )
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads)) if threads > 1 else None
        self.sending: set[Future[int]] = set()

    def run_once(self) -> int:
        """Turn committed events into messages, claim endpoints with due deliveries and send.

        With one thread it sends in place and returns the messages made plus the attempts
        made. With more, each endpoint goes to a free thread and this returns at once (the
        messages made plus the endpoints started): a slow endpoint keeps only its own thread
        busy while the next rounds serve the others.
        """
        made = fan_out_all(self.engine, self.clock.now())
        if self.pool is None:
            now = self.clock.now()
            endpoints = claim_endpoints(self.engine, now, 1, self.lease)
            return made + sum(self.send_endpoint(e, now + self.lease) for e in endpoints)
        self.sending = {f for f in self.sending if not f.done()}
        free = self.threads - len(self.sending)
        if free <= 0:
            return made
        now = self.clock.now()
        endpoints = claim_endpoints(self.engine, now, free, self.lease)
        for endpoint in endpoints:
            self.sending.add(self.pool.submit(self.send_endpoint, endpoint, now + self.lease))
        return made + len(endpoints)

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
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

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
        """Send an endpoint's due deliveries in batches: up to `in_flight` POSTs at once, each
        batch's outcomes recorded in one transaction, until none are due or the lease's
        first half is spent (a batch takes at most PER_ROUND / in_flight timeouts). The lease
        is renewed before each batch, which also stops at once an endpoint disabled or
        deleted meanwhile."""
        sent = 0
        began = time.monotonic()
        allow_private = self.allow_private or endpoint.env_kind != "live"
        while time.monotonic() - began < self.lease.total_seconds() / 2:
            renewed = self._renew(endpoint.id, lease[0])
            if renewed is None:
                break
            lease[0] = renewed
            now = self.clock.now()
            with single_statement(self.engine) as conn:
                due = conn.execute(
                    sa.select(webhook_deliveries, webhook_messages.c.body)
                    .join(
                        webhook_messages, webhook_messages.c.id == webhook_deliveries.c.message_id
                    )
                    .where(
                        webhook_deliveries.c.endpoint_id == endpoint.id,
                        webhook_deliveries.c.state == "pending",
                        webhook_deliveries.c.next_attempt_at <= now,
                    )
                    .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
                    .limit(PER_ROUND)
                ).all()
            if not due:
                break
            tries = self._send_batch(endpoint, due, allow_private, now)
            # Recorded, and the next attempts planned, from when the batch ended: a retry
            # 5 s after a 10 s timeout waits 5 s, not none.
            ended = self.clock.now()
            try:
                kept = self._record(endpoint, tries, ended)
            except Exception:  # unrecorded, the batch would be due again every round
                log.exception("recording attempts to endpoint %s failed", endpoint.id)
                kept = self._record(endpoint, [t.plainly() for t in tries], ended)
            if not kept:
                return sent + len(tries) - 1  # the attempt that disabled it is not counted
            sent += len(tries)
            if len(due) < PER_ROUND:
                break
        return sent

    def _send_batch(
        self, endpoint: Any, due: Sequence[Any], allow_private: bool, now: datetime
    ) -> list[Attempt]:
        if self.pool is not None:  # each endpoint its own senders: none waits behind another
            gone = threading.Event()  # a 410: what has not started yet is not sent

            def send(delivery: Any) -> Attempt | None:
                if gone.is_set():
                    return None
                attempt = self._post(endpoint, delivery, allow_private, now)
                if attempt.status == 410:
                    gone.set()
                return attempt

            with ThreadPoolExecutor(max_workers=IN_FLIGHT) as senders:
                return [t for t in senders.map(send, due) if t is not None]
        tries = []
        for delivery in due:  # one at a time: a 410 stops the rest at once
            tries.append(self._post(endpoint, delivery, allow_private, now))
            if tries[-1].status == 410:
                break
        return tries

    def _post(self, endpoint: Any, delivery: Any, allow_private: bool, now: datetime) -> Attempt:
        """One signed POST; never raises for the receiver's faults. The whole request, from
        connecting to the status, and the excerpt of the body kept after it, get the timeout
        in all (`deadline.within`): a slow, trickling or huge answer holds a sender no longer."""
        response: httpx.Response | None = None
        error = excerpt = None
        started = time.monotonic()
        try:
            headers = self._headers(endpoint, delivery.message_id, delivery.body, now)
            http = self.http if allow_private else self.public_http
            with (
                within(self.timeout_s),
                http.stream(
                    "POST", endpoint.url, content=delivery.body.encode(), headers=headers
                ) as response,
            ):
                excerpt = _excerpt(response)
        except httpx.HTTPError as exc:
            error = _storable(f"{type(exc).__name__}: {exc}"[:EXCERPT])
        except (httpx.InvalidURL, UnicodeError) as exc:  # a URL httpx can not use (a bad
            # IDNA name, a control character): the endpoint's fault, an attempt that failed
            log.warning("could not send to endpoint %s", endpoint.id, exc_info=True)
            error = _storable(f"{type(exc).__name__}: {exc}"[:EXCERPT])
        latency_ms = int((time.monotonic() - started) * 1000)
        return Attempt(delivery, response, error, latency_ms, excerpt)

    def _record(self, endpoint: Any, tries: list[Attempt], now: datetime) -> bool:
        """Record a batch of attempts and schedule what comes next, in one transaction, as if
        they were made one after another. False: the endpoint is now disabled."""
        disable = None
        with self.engine.begin() as conn:
            failing_since = conn.execute(  # locked: an enable meanwhile is read, not undone
                sa.select(webhook_endpoints.c.failing_since)
                .where(webhook_endpoints.c.id == endpoint.id)
                .with_for_update(key_share=True)  # fan-out's inserts still refer to it
            ).scalar()
            conn.execute(
                sa.insert(webhook_attempts),
                [
                    {
                        "delivery_id": t.delivery.id,
                        "at": now,
                        "status_code": t.status,
                        "latency_ms": t.latency_ms,
                        "response_excerpt": t.excerpt,
                        "error": t.error,
                    }
                    for t in tries
                ],
            )
            delivered = [t for t in tries if t.ok]
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
                attempts = t.delivery.attempts + 1
                delay = next_delay(attempts, None if t.plain else _retry_after(t.response, now))
                values: dict[str, Any] = {"attempts": attempts}
                if delay is None:
                    values.update(state="dead", dead_at=now, next_attempt_at=None)
                else:
                    values["next_attempt_at"] = now + timedelta(seconds=delay)
                conn.execute(
                    sa.update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == t.delivery.id, *_AS_CLAIMED)
                    .values(**values),
                    {"claimed": t.delivery.next_attempt_at},
                )
                if t.status == 410:
                    disable = "the endpoint answered 410 Gone"
                elif now - failing_since >= DISABLE_AFTER:
                    disable = "failing for 5 days"
            conn.execute(
                sa.update(webhook_endpoints)
                .where(webhook_endpoints.c.id == endpoint.id)
                .values(
                    failing_since=failing_since,
                    **({"state": "disabled", "disabled_reason": disable} if disable else {}),
                )
            )
        if disable:
            log.warning("webhook endpoint %s disabled: %s", endpoint.id, disable)
            return False
        return True

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
