"""Retry-After as a receiver or a server writes it: ASCII seconds or an HTTP date, anything
else ignored; and an attempt whose record fails still backs off."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import sqlalchemy as sa

from punchcard.client import Client
from punchcard.retry_after import retry_after_s
from punchcard.services import webhooks
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import webhook_attempts, webhook_deliveries
from punchcard.worker.delivery import RETRY_DELAYS_S, Deliverer

from .cursors import run
from .helpers import FakeClock, new_app
from .receiver import Reply, receiving

T0 = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7\t", 7.0),
        ("0", 0.0),
        ("9" * 5000, float("inf")),  # int() would refuse 5,000 digits; callers cap it
        ("Tue, 03 Mar 2026 15:10:00 GMT", 600.0),
        ("Tuesday, 03-Mar-26 15:10:00 GMT", 600.0),
        ("Tue Mar  3 15:10:00 2026", 600.0),  # asctime: no zone, GMT
        ("Tue, 03 Mar 2026 14:00:00 GMT", 0.0),  # past: now
        ("²", None),
        ("١٢", None),  # Arabic-Indic digits
        ("1.5", None),
        ("-1", None),
        ("Tue, 99 Mar 2026 15:10:00 GMT", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_ascii_seconds_or_an_http_date(value: str | None, seconds: float) -> None:
    assert retry_after_s(value, T0) == seconds


def _pending_enrolment(engine: sa.Engine, url: str) -> Loyalty:
    app = new_app(engine, start=T0)
    with engine.begin() as conn:
        webhooks.create_endpoint(
            conn,
            app.env_id,
            {"url": url, "event_types": ["member.enrolled"]},
            T0,
            allow_private=True,
        )
    app.enroll({"member": "ann"}, T0)
    return app


def _delivery(engine: sa.Engine) -> sa.Row[tuple[object, ...]]:
    with engine.connect() as conn:
        [delivery] = conn.execute(sa.select(webhook_deliveries)).all()
        return delivery


def _attempts(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.select(
                    webhook_attempts.c.status_code,
                    webhook_attempts.c.response_excerpt,
                    webhook_attempts.c.error,
                ).order_by(webhook_attempts.c.id)
            )
        ]


@pytest.mark.parametrize(
    ("header", "wait_s"),
    [
        ("²", RETRY_DELAYS_S[1]),  # ignored: the schedule's 5 s
        ("1²", RETRY_DELAYS_S[1]),
        (format_datetime(T0 + timedelta(minutes=10), usegmt=True), 600),
        (format_datetime(T0 + timedelta(seconds=2), usegmt=True), RETRY_DELAYS_S[1]),  # shorter
    ],
)
def test_a_receivers_retry_after_is_recorded_and_sets_the_next_attempt(
    engine: sa.Engine, header: str, wait_s: int
) -> None:
    """`Retry-After: ²` rolled back the whole batch: no attempt, no backoff, sent every round."""
    with receiving() as receiver:
        receiver.script = [Reply(503, headers={"Retry-After": header}, body=b"busy")]
        _pending_enrolment(engine, receiver.url)
        clock = FakeClock(T0)
        deliverer = Deliverer(engine, clock, threads=1)
        run(deliverer)
        assert len(receiver.received) == 1
        assert _attempts(engine) == [(503, "busy", None)]
        delivery = _delivery(engine)
        assert (delivery.state, delivery.attempts) == ("pending", 1)
        assert delivery.next_attempt_at == T0 + timedelta(seconds=wait_s)
        clock.at = T0 + timedelta(seconds=wait_s - 1)
        assert run(deliverer) == 0
        assert len(receiver.received) == 1
        clock.at = T0 + timedelta(seconds=wait_s)
        assert run(deliverer) == 1
        assert _delivery(engine).state == "delivered"


def _refuse_excerpts_saying_poison(engine: sa.Engine) -> None:
    """A real failure of the attempt's record, from the database itself."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON webhook_attempts"
                " WHEN NEW.response_excerpt LIKE '%poison%'"
                " BEGIN SELECT RAISE(ABORT, 'poisoned excerpt'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.response_excerpt LIKE '%%poison%%' THEN"
                " RAISE EXCEPTION 'poisoned excerpt'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON webhook_attempts"
                " FOR EACH ROW EXECUTE FUNCTION poison()"
            )


@pytest.mark.parametrize("threads", [1, 2])
def test_an_attempt_whose_record_fails_is_recorded_plainly_and_backs_off(
    engine: sa.Engine, threads: int
) -> None:
    """Status and latency are kept; the excerpt and the Retry-After (the receiver's words,
    the likely cause) are not, so the next try is at the schedule's 5 s, not every round."""
    with receiving() as receiver:
        receiver.script = [Reply(503, headers={"Retry-After": "120"}, body=b"poison")]
        _pending_enrolment(engine, receiver.url)
        _refuse_excerpts_saying_poison(engine)
        clock = FakeClock(T0)
        deliverer = Deliverer(engine, clock, threads=threads)
        run(deliverer)
        deliverer.drain()
        assert _attempts(engine) == [(503, None, None)]
        delivery = _delivery(engine)
        assert (delivery.state, delivery.attempts) == ("pending", 1)
        assert delivery.next_attempt_at == T0 + timedelta(seconds=RETRY_DELAYS_S[1])
        run(deliverer)
        deliverer.drain()
        assert len(receiver.received) == 1  # not sent again at once
        clock.at = T0 + timedelta(seconds=RETRY_DELAYS_S[1])
        run(deliverer)
        deliverer.drain()
        assert len(receiver.received) == 2
        assert _delivery(engine).state == "delivered"
        assert _attempts(engine) == [(503, None, None), (200, "ok", None)]
        deliverer.stop()


_JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("header", ["²", "1.5", "soon"])
def test_the_client_ignores_a_retry_after_that_is_not_one(header: str) -> None:
    """It raised ValueError (`"²".isdigit()` and then `float("²")`) instead of retrying."""
    with receiving(Reply(200, headers=_JSON, body=b'{"done": true}')) as server:
        server.script = [Reply(503, headers={"Retry-After": header, **_JSON}, body=b"{}")]
        with Client(server.url.removesuffix("/hooks"), "key", backoff_s=0.01) as client:
            assert client.request("POST", "/v1/anything", {"n": 1}) == {"done": True}
        first, second = server.received
        assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
        assert json.loads(second.body) == {"n": 1}
        assert second.at - first.at < 1.0  # backoff only: 0.01 s x (0.5 to 1.5)


def test_the_client_waits_until_a_retry_after_date() -> None:
    with receiving(Reply(200, headers=_JSON, body=b'{"done": true}')) as server:
        until = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
        server.script = [Reply(503, headers={"Retry-After": until, **_JSON}, body=b"{}")]
        with Client(server.url.removesuffix("/hooks"), "key", backoff_s=0.01) as client:
            assert client.request("POST", "/v1/anything", {"n": 1}) == {"done": True}
        first, second = server.received
        assert second.at - first.at >= 1.5  # the date's whole second, 2 to 3 s away
