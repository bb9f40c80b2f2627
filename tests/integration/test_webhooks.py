"""Outbound webhooks to a real receiver on loopback: signed, retried on schedule, never lost.

Events go from the outbox by each endpoint's cursor: a first try that succeeds leaves no
row but a count; message, delivery and attempt rows are made for failures only."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from punchcard.errors import InvalidInput, NotFound
from punchcard.services import webhooks
from punchcard.services.loyalty import Loyalty
from punchcard.services.tenants import create_tenant
from punchcard.store.database import open_database
from punchcard.store.tables import (
    environments,
    outbox,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_messages,
)
from punchcard.worker.delivery import (
    IN_FLIGHT,
    RETRY_DELAYS_S,
    Attempt,
    Deliverer,
    claim_endpoints,
)

from .cursors import run as _run
from .cursors import settle
from .helpers import FakeClock, burritos, new_app
from .receiver import Reply, receiving

T0 = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)


def _endpoint(
    engine: sa.Engine, app: Loyalty, url: str, types: list[str] | None = None
) -> dict[str, object]:
    with engine.begin() as conn:
        return webhooks.create_endpoint(
            conn, app.env_id, {"url": url, "event_types": types}, T0, allow_private=True
        )


def _story(engine: sa.Engine, url: str) -> tuple[Loyalty, dict[str, object]]:
    """Four events for an endpoint registered first (events before it are not its own)."""
    app = new_app(engine, start=T0)
    made = _endpoint(engine, app, url)
    app.enroll({"member": "ann"}, T0)
    app.place_order(burritos("o1", "ann", qty=2), T0)
    app.run_due(T0)
    return app, made


def _cursor(engine: sa.Engine, endpoint: object) -> tuple[int, int, int]:
    """The endpoint's cursor (tx, id) and its count of events delivered at the first try."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                webhook_endpoints.c.cursor_tx,
                webhook_endpoints.c.cursor_id,
                webhook_endpoints.c.delivered,
            ).where(webhook_endpoints.c.id == endpoint)
        ).one()
    return int(row.cursor_tx), int(row.cursor_id), int(row.delivered)


def _deliveries(engine: sa.Engine) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(webhook_deliveries).order_by(webhook_deliveries.c.id)).all()
        )


def test_every_event_is_delivered_signed_and_in_member_order(engine: sa.Engine) -> None:
    with receiving() as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url)
        app.enroll({"member": "ann"}, T0)
        app.place_order(burritos("o1", "ann", qty=2), T0)
        app.run_due(T0)
        # program.published came before the endpoint: not its own.
        assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 4
        events = []
        for got in receiver.received:
            verified = Webhook(str(made["secret"])).verify(got.body, got.headers)
            events.append((verified["type"], verified["data"].get("member_seq")))
        # Posted as it closed (no accrual delay): its points were never pending.
        assert events == [
            ("member.enrolled", 1),
            ("order.evaluated", 2),
            ("points.posted", 3),
            ("punch_card.progressed", 4),
        ]
        assert json.loads(receiver.received[2].body)["data"]["points"] == 200  # 2 x 10.00
        evaluated = json.loads(receiver.received[1].body)["data"]
        assert evaluated["qualifying_spend"] == {"amount": "20.00", "currency": "USD"}
        assert evaluated["awards"][0]["explanation"] == "Base: 20.00 x 10 points = 200."
        assert len(set(receiver.ids())) == 4
        assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 0  # nothing twice


def test_an_endpoint_gets_only_its_event_types(engine: sa.Engine) -> None:
    with receiving() as receiver:
        app = new_app(engine, start=T0)
        _endpoint(engine, app, receiver.url, ["points.posted"])
        app.enroll({"member": "ann"}, T0)
        app.place_order(burritos("o1", "ann"), T0)
        app.run_due(T0)
        _run(Deliverer(engine, FakeClock(T0), threads=1))
        assert [json.loads(r.body)["type"] for r in receiver.received] == ["points.posted"]


def test_failures_follow_the_schedule_then_dead_letter(engine: sa.Engine) -> None:
    with receiving(Reply(500)) as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        clock = FakeClock(T0)
        deliverer = Deliverer(engine, clock, threads=1)
        expected = T0
        for attempt, delay_s in enumerate(RETRY_DELAYS_S, start=1):
            expected += timedelta(seconds=delay_s)
            clock.at = expected - timedelta(seconds=1)
            if delay_s:
                assert _run(deliverer) == 0, f"attempt {attempt} came early"
            clock.at = expected
            assert _run(deliverer) == 1
            assert len(receiver.received) == attempt
        [delivery] = _deliveries(engine)
        assert (delivery.state, delivery.attempts, delivery.dead_at) == ("dead", 8, expected)
        assert expected - T0 == timedelta(hours=27, minutes=35, seconds=5)
        with engine.connect() as conn:
            dead = webhooks.dead_letters(conn, app.env_id, str(made["id"]))
            log = webhooks.attempts(conn, app.env_id, str(made["id"]), 0, 100)
        assert [d["attempts"] for d in dead] == [8]
        assert [a.status_code for a in log] == [500] * 8
        assert all(a.response_excerpt == "ok" for a in log)


def test_retry_after_is_honoured(engine: sa.Engine) -> None:
    with receiving() as receiver:
        receiver.script = [Reply(503, headers={"Retry-After": "120"})]
        app = new_app(engine, start=T0)
        _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        clock = FakeClock(T0)
        deliverer = Deliverer(engine, clock, threads=1)
        _run(deliverer)
        assert _deliveries(engine)[0].next_attempt_at == T0 + timedelta(seconds=120)
        clock.at = T0 + timedelta(seconds=119)
        assert _run(deliverer) == 0
        clock.at = T0 + timedelta(seconds=120)
        assert _run(deliverer) == 1
        assert _deliveries(engine)[0].state == "delivered"


def test_timeouts_and_errors_then_success_deliver_every_event(engine: sa.Engine) -> None:
    with receiving() as receiver:
        receiver.script = [Reply(500), Reply(200, delay_s=1.5), Reply(502)]
        _app, made = _story(engine, receiver.url)
        clock = FakeClock(T0)
        deliverer = Deliverer(engine, clock, threads=1, timeout_s=0.5)
        for step in range(6):
            _run(deliverer)
            clock.at += timedelta(seconds=RETRY_DELAYS_S[min(step + 1, 7)])
        # The three that failed at first have rows, and were delivered later; the other one
        # went at the first try and is counted.
        assert [d.state for d in _deliveries(engine)] == ["delivered"] * 3
        assert _cursor(engine, made["id"])[2] == 1
        assert len(set(receiver.ids())) == 4  # every message arrived; some more than once
        assert len(receiver.received) > 4


def test_a_receivers_cookie_is_never_sent_back_and_a_redirect_never_followed(
    engine: sa.Engine,
) -> None:
    with receiving() as elsewhere, receiving() as receiver:
        receiver.script = [
            Reply(200, headers={"set-cookie": "session=abc; Path=/"}),
            Reply(302, headers={"location": elsewhere.url}),
        ]
        _story(engine, receiver.url)
        assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 4
        assert len(receiver.received) == 4
        assert [r for r in receiver.received if "cookie" in r.headers] == []
        assert elsewhere.received == []  # the 302 was an answer, not a new address
        [delivery] = _deliveries(engine)  # ... and a failed attempt, retried on schedule
        assert (delivery.state, delivery.attempts) == ("pending", 1)
        with engine.connect() as conn:
            [attempt] = conn.execute(sa.select(webhook_attempts)).all()
        assert attempt.status_code == 302


def test_a_410_disables_the_endpoint(engine: sa.Engine) -> None:
    with receiving(Reply(410)) as receiver:
        app, made = _story(engine, receiver.url)
        assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 0
        assert len(receiver.received) == 1
        with engine.connect() as conn:
            row = webhooks.endpoint_row(conn, app.env_id, str(made["id"]))
        assert (row.state, row.disabled_reason) == ("disabled", "the endpoint answered 410 Gone")
        assert _run(Deliverer(engine, FakeClock(T0 + timedelta(days=1)), threads=1)) == 0


def test_an_endpoint_failing_for_five_days_is_disabled(engine: sa.Engine) -> None:
    with receiving(Reply(500)) as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url, ["member.enrolled"])
        clock = FakeClock(T0)
        deliverer = Deliverer(engine, clock, threads=1)
        for day in range(6):
            clock.at = T0 + timedelta(days=day)
            app.enroll({"member": f"m{day}"}, clock.at)
            _run(deliverer)
        with engine.connect() as conn:
            row = webhooks.endpoint_row(conn, app.env_id, str(made["id"]))
        assert (row.state, row.disabled_reason, row.failing_since) == (
            "disabled",
            "failing for 5 days",
            T0,
        )
        sent = len(receiver.received)
        clock.at = T0 + timedelta(days=7)
        assert _run(deliverer) == 0  # disabled: nothing more is sent
        assert len(receiver.received) == sent


def test_messages_made_while_an_endpoint_is_disabled_wait_and_go_when_it_is_enabled(
    engine: sa.Engine,
) -> None:
    """Disabled by a 410, then by the API: nothing is sent meanwhile, nothing is lost. Once
    enabled, every message made while it was off goes out, once each; once it is deleted,
    what still waited is dropped and a resend does not count it."""
    with receiving(Reply(410)) as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url, ["member.enrolled"])
        endpoint = str(made["id"])
        clock = FakeClock(T0)
        deliverer = Deliverer(engine, clock, threads=1)
        app.enroll({"member": "m0"}, T0)
        assert _run(deliverer) == 0  # the 410 disables it
        for n in (1, 2, 3):
            app.enroll({"member": f"m{n}"}, T0)
        clock.at = T0 + timedelta(days=1)
        assert _run(deliverer) == 0
        assert len(receiver.received) == 1
        # The refused one waits as a delivery; the three made since wait after the cursor.
        waiting = [(d.state, d.attempts, d.next_attempt_at) for d in _deliveries(engine)]
        assert waiting == [("pending", 1, T0 + timedelta(seconds=5))]
        with engine.connect() as conn:
            first = conn.execute(sa.select(webhook_messages.c.outbox_id)).scalar_one()
        assert _cursor(engine, endpoint)[1:] == (first, 0)
        receiver.default = Reply(200)
        enabled_at = T0 + timedelta(days=2)

        def enable(on: bool) -> None:
            with engine.begin() as conn:
                webhooks.update_endpoint(
                    conn, app.env_id, endpoint, {"enabled": on}, enabled_at, allow_private=True
                )

        enable(True)
        clock.at = enabled_at
        assert _run(deliverer) == 4  # the one the 410 refused, then those made meanwhile
        sent = [json.loads(r.body)["data"]["member"] for r in receiver.received[1:]]
        assert sorted(sent) == ["m0", "m1", "m2", "m3"]
        enable(False)
        app.enroll({"member": "m4"}, enabled_at)
        assert _run(deliverer) == 0
        enable(True)
        enable(True)  # enabling twice sends nothing twice
        assert _run(deliverer) == 1
        assert _run(deliverer) == 0
        assert [json.loads(r.body)["data"]["member"] for r in receiver.received[5:]] == ["m4"]
        assert [d.state for d in _deliveries(engine)] == ["delivered"]
        assert _cursor(engine, endpoint)[2] == 4  # m1, m2, m3, m4 at their first try
        # Deleted: what waits is dropped, and a resend of it requeues nothing.
        enable(False)
        app.enroll({"member": "m5"}, enabled_at)
        with engine.connect() as conn:
            last = conn.execute(sa.select(sa.func.max(outbox.c.id))).scalar_one()
        with engine.begin() as conn:
            webhooks.delete_endpoint(conn, app.env_id, endpoint, enabled_at)
        with engine.begin() as conn:
            assert webhooks.resend(conn, app.env_id, webhooks.message_id(last), enabled_at) == 0
        assert _run(deliverer) == 0
        assert len(receiver.received) == 6


def test_after_rotation_both_secrets_sign_for_a_day(engine: sa.Engine) -> None:
    with receiving() as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url, ["member.enrolled"])
        with engine.begin() as conn:
            rotated = webhooks.rotate_secret(conn, app.env_id, str(made["id"]), T0)
        app.enroll({"member": "ann"}, T0)
        _run(Deliverer(engine, FakeClock(T0), threads=1))
        got = receiver.received[0]
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        for secret in (made["secret"], rotated["secret"]):
            assert Webhook(str(secret)).verify(got.body, got.headers)["type"] == "member.enrolled"
        app.enroll({"member": "bob"}, T0 + timedelta(hours=25))
        _run(Deliverer(engine, FakeClock(T0 + timedelta(hours=25)), threads=1))
        later = receiver.received[1]
        assert len(later.headers["webhook-signature"].split(" ")) == 1
        with pytest.raises(Exception):  # noqa: B017 - the package raises its own verification error
            Webhook(str(made["secret"])).verify(later.body, later.headers)


def test_a_slow_receiver_slows_only_its_own_endpoint(engine: sa.Engine) -> None:
    with receiving(Reply(200, delay_s=2.0)) as slow, receiving() as fast:
        app = new_app(engine, start=T0)
        _endpoint(engine, app, slow.url, ["member.enrolled"])
        _endpoint(engine, app, fast.url, ["member.enrolled"])
        for n in range(IN_FLIGHT + 2):
            app.enroll({"member": f"m{n}"}, T0)
        started = time.monotonic()
        deliverer = Deliverer(engine, FakeClock(T0), threads=4)
        # The slow receiver answers after 2 s; anything under 1.5 s did not wait for it, with
        # room for a loaded machine.
        assert _run(deliverer) == 2  # both endpoints handed to threads; nothing waited for
        assert time.monotonic() - started < 1.5
        while len(fast.received) < IN_FLIGHT + 2 and time.monotonic() - started < 5:
            time.sleep(0.05)
        assert len(fast.received) == IN_FLIGHT + 2
        assert max(r.at for r in fast.received) - started < 1.5  # not behind the slow one
        assert len(slow.received) < IN_FLIGHT + 2  # the slow one is still at it
        deliverer.drain()
        assert len(slow.received) == IN_FLIGHT + 2
        # One at a time until two answers in a row come slower than QUICK_MS, then the rest
        # IN_FLIGHT at once (here all of them), each sent only after the one before it.
        arrivals = sorted(r.at - started for r in slow.received)
        assert arrivals[0] < 1.5
        assert 2.0 <= arrivals[1] < 3.5
        assert all(4.0 <= a < 5.5 for a in arrivals[2:]), arrivals
        assert time.monotonic() - started >= 6.0
        # Its next batch goes to the posters at once: IN_FLIGHT of them together.
        for n in range(IN_FLIGHT):
            app.enroll({"member": f"n{n}"}, T0)
        again = time.monotonic()
        _run(deliverer)
        deliverer.drain()
        later = sorted(r.at - again for r in slow.received[IN_FLIGHT + 2 :])
        assert len(later) == IN_FLIGHT and later[-1] < 1.5, later
        deliverer.stop()


def test_a_resend_while_the_first_send_is_in_flight_is_not_lost(engine: sa.Engine) -> None:
    """The receiver has the message, the deliverer has not yet recorded it, and the owner
    resends it: the record of the first send must not undo the resend."""
    with receiving(Reply(500)) as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 1  # a 500: a delivery
        receiver.default = Reply(200)
        [claimed] = _deliveries(engine)  # as a sender read it, for its second try
        with engine.connect() as conn:
            endpoint = webhooks.endpoint_row(conn, app.env_id, str(made["id"]))
        later = T0 + timedelta(seconds=1)
        with engine.begin() as conn:  # the owner's resend, before the record
            assert webhooks.resend(conn, app.env_id, claimed.message_id, later) == 1
        deliverer = Deliverer(engine, FakeClock(later), threads=1)
        sent = Attempt(claimed, httpx.Response(200), None, 3)
        assert deliverer._record(endpoint, [sent], T0)
        [after] = _deliveries(engine)
        assert (after.state, after.next_attempt_at) == ("pending", later)  # the resend stands
        assert _run(deliverer) == 1
        assert len(receiver.received) == 2  # the 500, then the resend; the 200 was by hand
        assert [d.state for d in _deliveries(engine)] == ["delivered"]


def test_a_deleted_environment_sends_nothing_even_from_an_enabled_endpoint(
    engine: sa.Engine,
) -> None:
    """A request that passed its key check just before its sandbox was deleted can still
    make an endpoint there: the deliverer never sends for a deleted environment."""
    with receiving() as receiver:
        app, _made = _story(engine, receiver.url)
        with engine.begin() as conn:
            conn.execute(
                sa.update(environments).where(environments.c.id == app.env_id).values(deleted_at=T0)
            )
        assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 0
        assert receiver.received == []


def test_live_refuses_loopback_and_private_urls(engine: sa.Engine) -> None:
    tenant = create_tenant(engine, "Live", T0)
    for url in (
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/x",
        "http://[::1]/x",
        "ftp://example.com/x",
        "not a url",
    ):
        with pytest.raises(InvalidInput), engine.begin() as conn:
            webhooks.create_endpoint(
                conn, tenant["live_environment"], {"url": url}, T0, allow_private=False
            )
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(webhook_endpoints)).scalar_one()
            == 0
        )


def test_resend_and_recover_send_dead_letters_again(engine: sa.Engine) -> None:
    with receiving(Reply(500)) as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 1  # fails: a delivery
        died = T0 + timedelta(hours=27)  # a real dead letter dies some 27 hours after it is made
        with engine.begin() as conn:
            conn.execute(
                sa.update(webhook_deliveries).values(state="dead", attempts=8, dead_at=died)
            )
        receiver.default = Reply(200)
        with engine.begin() as conn:  # since after it died: nothing; since the outage: it
            assert webhooks.recover(conn, app.env_id, str(made["id"]), died + timedelta(1), T0) == 0
            assert webhooks.recover(conn, app.env_id, str(made["id"]), died, T0) == 1
        assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 1
        message = receiver.ids()[-1]
        with engine.begin() as conn:
            assert webhooks.resend(conn, app.env_id, message, T0) == 1
        _run(Deliverer(engine, FakeClock(T0), threads=1))
        assert receiver.ids()[-2:] == [message, message]


def test_deliverers_racing_send_every_environments_events_once(
    database_url: str, engine: sa.Engine
) -> None:
    """Each round claims endpoints with events after their cursors, in every environment,
    while the due work goes on; deliverers racing send each event once, and make no row."""
    with receiving() as receiver:
        apps = [new_app(engine, start=T0) for _ in range(2)]
        for app in apps:
            _endpoint(engine, app, receiver.url)
            for n in range(30):
                app.enroll({"member": f"m{n}"}, T0)
        racers = [open_database(database_url) for _ in range(4)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            sent = list(pool.map(lambda e: _run(Deliverer(e, FakeClock(T0), threads=1)), racers))
        for racer in racers:
            racer.dispose()
        assert sorted(sent) == [0, 0, 30, 30]  # one sender per endpoint
        assert len(receiver.ids()) == len(set(receiver.ids())) == 60
        apps[0].enroll({"member": "late"}, T0)
        deliverer = Deliverer(engine, FakeClock(T0), threads=1)
        assert _run(deliverer) == 1
        assert _run(deliverer) == 0
        assert len(receiver.ids()) == len(set(receiver.ids())) == 61
        with engine.connect() as conn:
            for table in (webhook_messages, webhook_deliveries, webhook_attempts):
                assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


def test_a_batch_moves_the_cursor_once(engine: sa.Engine) -> None:
    """40 events go in two batches (32, then 8): two updates of the endpoint's cursor, each
    to the last event of its batch, and the count of first-try successes beside it."""
    updates: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("UPDATE webhook_endpoints") and "cursor_id" in statement:
            updates.append(statement)

    with receiving() as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url)
        for n in range(40):
            app.enroll({"member": f"m{n}"}, T0)
        sa.event.listen(engine, "before_cursor_execute", seen)
        try:
            assert _run(Deliverer(engine, FakeClock(T0), threads=1)) == 40
        finally:
            sa.event.remove(engine, "before_cursor_execute", seen)
        assert len(updates) == 2
        with engine.connect() as conn:
            last = conn.execute(
                sa.select(outbox.c.tx, outbox.c.id).order_by(outbox.c.id.desc()).limit(1)
            ).one()
        assert _cursor(engine, made["id"]) == (last.tx, last.id, 40)
        sent = [webhooks.message_id(int(n)) for n in range(last.id - 39, last.id + 1)]
        assert receiver.ids() == sent  # one at a time: in outbox order, each once


def test_a_failing_endpoint_retries_on_schedule_while_the_others_move_on(
    engine: sa.Engine,
) -> None:
    with receiving(Reply(500)) as failing, receiving() as fine:
        app = new_app(engine, start=T0)
        bad = _endpoint(engine, app, failing.url, ["member.enrolled"])
        good = _endpoint(engine, app, fine.url, ["member.enrolled"])
        for n in range(3):
            app.enroll({"member": f"m{n}"}, T0)
        clock = FakeClock(T0)
        deliverer = Deliverer(engine, clock, threads=1)
        assert _run(deliverer) + _run(deliverer) == 6
        assert _run(deliverer) == 0
        assert _cursor(engine, good["id"])[2] == 3  # counted, no rows
        assert _cursor(engine, bad["id"])[1:] == (*_cursor(engine, good["id"])[1:2], 0)
        rows = [
            (d.endpoint_id, d.state, d.attempts, d.next_attempt_at) for d in _deliveries(engine)
        ]
        assert rows == [(bad["id"], "pending", 1, T0 + timedelta(seconds=5))] * 3
        clock.at = T0 + timedelta(seconds=4)
        assert _run(deliverer) == 0  # not yet
        clock.at = T0 + timedelta(seconds=5)
        failing.default = Reply(200)
        assert _run(deliverer) == 3
        assert [d.state for d in _deliveries(engine)] == ["delivered"] * 3
        assert failing.ids()[3:] == failing.ids()[:3] == fine.ids()  # same ids, same order
        with engine.connect() as conn:
            log = webhooks.attempts(conn, app.env_id, str(bad["id"]), 0, 100)
            assert webhooks.attempts(conn, app.env_id, str(good["id"]), 0, 100) == []
        assert [a.status_code for a in log] == [500] * 3 + [200] * 3


def test_a_message_delivered_at_its_first_try_can_be_resent(engine: sa.Engine) -> None:
    """It has no row yet: the resend makes its message (same id, same body) and a delivery
    for every endpoint it was meant for, not one registered after it."""
    with receiving() as receiver:
        app = new_app(engine, start=T0)
        _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        deliverer = Deliverer(engine, FakeClock(T0), threads=1)
        assert _run(deliverer) == 1
        _endpoint(engine, app, receiver.url, ["member.enrolled"])  # later: not meant for it
        [message] = receiver.ids()
        with engine.begin() as conn:
            assert webhooks.resend(conn, app.env_id, message, T0) == 1
            assert webhooks.resend(conn, app.env_id, message, T0) == 1  # twice: still one
        with engine.begin() as conn, pytest.raises(NotFound):
            webhooks.resend(conn, app.env_id, "msg_999999", T0)
        with engine.begin() as conn, pytest.raises(NotFound):
            webhooks.resend(conn, "another-env", message, T0)
        assert _run(deliverer) == 1
        assert receiver.ids() == [message, message]
        assert receiver.received[0].body == receiver.received[1].body
        assert [d.state for d in _deliveries(engine)] == ["delivered"]


def test_only_an_excerpt_of_an_answers_body_is_read(engine: sa.Engine) -> None:
    """A receiver answering with megabytes costs the deliverer 300 bytes of them."""
    with receiving(Reply(500, body=b"x" * 5_000_000)) as receiver:
        app = new_app(engine, start=T0)
        _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        _run(Deliverer(engine, FakeClock(T0), threads=1))
        with engine.connect() as conn:
            [excerpt] = conn.execute(sa.select(webhook_attempts.c.response_excerpt)).scalars()
        assert excerpt == "x" * 300
        assert [d.state for d in _deliveries(engine)] == ["pending"]


def test_a_url_the_http_client_can_not_use_is_a_failed_attempt_retried_on_schedule(
    engine: sa.Engine,
) -> None:
    app = new_app(engine, start=T0)
    made = _endpoint(engine, app, "http://127.0.0.1:9/hooks", ["member.enrolled"])
    with engine.begin() as conn:  # a name that passed the URL check but is not valid IDNA
        conn.execute(sa.update(webhook_endpoints).values(url="http://xn--zz.com/hook"))
    app.enroll({"member": "ann"}, T0)
    _run(Deliverer(engine, FakeClock(T0), threads=1))
    [delivery] = _deliveries(engine)
    assert (delivery.state, delivery.attempts) == ("pending", 1)
    assert delivery.next_attempt_at == T0 + timedelta(seconds=RETRY_DELAYS_S[1])
    with engine.connect() as conn:
        [attempt] = conn.execute(sa.select(webhook_attempts)).all()
        endpoint = webhooks.endpoint_row(conn, app.env_id, str(made["id"]))
    assert (attempt.status_code, attempt.error) == (None, "IDNAError: Invalid A-label")
    assert endpoint.locked_until is None  # its lease given back


def test_a_sender_stops_when_its_endpoint_is_disabled_or_another_sender_holds_it(
    engine: sa.Engine,
) -> None:
    with receiving() as receiver:
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        deliverer = Deliverer(engine, FakeClock(T0), threads=1)
        settle(engine)
        [endpoint] = claim_endpoints(engine, T0, 1, deliverer.lease)
        held = T0 + deliverer.lease
        other = held + timedelta(seconds=30)  # this lease lapsed; another sender took it
        with engine.begin() as conn:
            conn.execute(sa.update(webhook_endpoints).values(locked_until=other))
        assert deliverer.send_endpoint(endpoint, held) == 0
        with engine.connect() as conn:
            assert webhooks.endpoint_row(conn, app.env_id, str(made["id"])).locked_until == other
        with engine.begin() as conn:  # disabled while this sender held it
            conn.execute(sa.update(webhook_endpoints).values(locked_until=held, state="disabled"))
        assert deliverer.send_endpoint(endpoint, held) == 0
        assert receiver.received == []
        assert _cursor(engine, made["id"]) == (endpoint.cursor_tx, endpoint.cursor_id, 0)


def test_the_next_attempt_is_planned_from_when_the_failed_one_ended(engine: sa.Engine) -> None:
    """A POST that timed out after 0.5 s is tried again 5 s after that, not 4.5 s."""

    class Ticking:  # the server's clock, from T0 on
        began = time.monotonic()

        def now(self) -> datetime:
            return T0 + timedelta(seconds=time.monotonic() - self.began)

    with receiving(Reply(200, delay_s=1.0)) as receiver:
        app = new_app(engine, start=T0)
        _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        _run(Deliverer(engine, Ticking(), threads=1, timeout_s=0.5))
        [delivery] = _deliveries(engine)
        assert (delivery.state, delivery.attempts) == ("pending", 1)
        waits = (delivery.next_attempt_at - T0).total_seconds()
        assert RETRY_DELAYS_S[1] + 0.5 <= waits < RETRY_DELAYS_S[1] + 3


def test_a_410_stops_a_batch_sent_in_parallel(engine: sa.Engine) -> None:
    """Only the POSTs already in flight when the first 410 comes back are made; the rest
    wait for the endpoint to be enabled again."""
    with receiving(Reply(410, delay_s=0.2)) as receiver:
        # Two slow answers first: the rest of the batch goes to the posters, IN_FLIGHT at once.
        receiver.script = [Reply(200, delay_s=0.05), Reply(200, delay_s=0.05)]
        app = new_app(engine, start=T0)
        made = _endpoint(engine, app, receiver.url, ["member.enrolled"])
        for n in range(40):
            app.enroll({"member": f"m{n}"}, T0)
        deliverer = Deliverer(engine, FakeClock(T0), threads=2)
        _run(deliverer)
        deliverer.drain()
        deliverer.stop()
        assert 2 + 1 <= len(receiver.received) <= 2 + IN_FLIGHT
        deliveries = _deliveries(engine)  # the two delivered at once left no rows
        assert sum(d.attempts for d in deliveries) == len(receiver.received) - 2
        assert {d.state for d in deliveries} == {"pending"}
        # The cursor passed the tried ones only: the rest wait after it, none skipped.
        with engine.connect() as conn:
            tried = conn.execute(sa.select(sa.func.max(webhook_messages.c.outbox_id))).scalar()
            after = conn.execute(
                sa.select(sa.func.count()).where(
                    outbox.c.env_id == app.env_id, outbox.c.type == "member.enrolled"
                )
            ).scalar_one()
        assert _cursor(engine, made["id"])[1] == tried
        assert after == 40


@contextmanager
def _trickling(head: bytes, tail: bytes) -> Iterator[str]:
    """A receiver that sends `head` at once, then `tail` a byte every 0.05 s: never long
    enough between bytes for a single read to time out."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            try:
                conn.sendall(head)
                for byte in tail:
                    if stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(0.05)
            except OSError:
                return  # the sender gave up: as it should

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hooks"
    finally:
        stop.set()
        listener.close()


STATUS = b"HTTP/1.1 200 OK\r\ncontent-length: 90\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "tail", "state", "error"),
    [
        (b"", STATUS + b"x" * 90, "pending", "ReadTimeout"),  # the status itself trickles
        (STATUS, b"x" * 90, "delivered", None),  # the status at once, then the body trickles
    ],
)
def test_a_trickling_answer_holds_a_sender_no_longer_than_the_timeout(
    engine: sa.Engine, head: bytes, tail: bytes, state: str, error: str | None
) -> None:
    with _trickling(head, tail) as url:
        app = new_app(engine, start=T0)
        endpoint = _endpoint(engine, app, url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        began = time.monotonic()
        _run(Deliverer(engine, FakeClock(T0), threads=1, timeout_s=1.0))
        assert time.monotonic() - began < 2.5  # the whole answer would take 6.5 s
        with engine.connect() as conn:
            attempts = conn.execute(sa.select(webhook_attempts)).all()
        if state == "delivered":  # at the first try: counted, no rows
            assert (_deliveries(engine), attempts) == ([], [])
            assert _cursor(engine, endpoint["id"])[2] == 1
            return
        [delivery] = _deliveries(engine)
        assert delivery.state == state
        [attempt] = attempts
        assert (attempt.error or "").split(":")[0] == (error or "")
        assert 900 <= attempt.latency_ms < 2500


def test_a_compressed_answer_is_not_inflated(engine: sa.Engine) -> None:
    """5 MB of zeros gzip to 5 kB: the deliverer asks for no compression, and keeps the
    first 300 bytes as they came even when a receiver compresses anyway."""
    squeezed = gzip.compress(b"0" * 5_000_000)
    reply = Reply(500, headers={"content-encoding": "gzip"}, body=squeezed)
    with receiving(reply) as receiver:
        app = new_app(engine, start=T0)
        _endpoint(engine, app, receiver.url, ["member.enrolled"])
        app.enroll({"member": "ann"}, T0)
        _run(Deliverer(engine, FakeClock(T0), threads=1))
        assert receiver.received[0].headers["accept-encoding"] == "identity"
        with engine.connect() as conn:
            [excerpt] = conn.execute(sa.select(webhook_attempts.c.response_excerpt)).scalars()
        assert excerpt == squeezed[:300].decode("utf-8", "replace").replace("\x00", "\ufffd")
        assert [d.state for d in _deliveries(engine)] == ["pending"]
