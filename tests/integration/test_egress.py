"""Live webhooks connect only to addresses that were checked, at the moment of connecting.

The receiver is real, on loopback. The resolver is scripted where a test needs a name to
resolve differently from one look-up to the next (DNS rebinding): that is a DNS server's
behaviour, outside this machine.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from punchcard.services import webhooks
from punchcard.store.tables import environments, webhook_attempts, webhook_deliveries
from punchcard.worker.deadline import Resolving, Transport, within
from punchcard.worker.delivery import Deliverer
from punchcard.worker.egress import PublicOnly, PublicOnlyTransport

from .cursors import run
from .helpers import FakeClock, new_app
from .receiver import receiving

T0 = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)


class ScriptedResolver:
    """Answers each look-up with the next list of addresses (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    """A name that rebinds after its check (to 127.0.0.2, where nothing listens) is still
    reached at the address checked: it is resolved once, and that answer is used."""
    resolver = ScriptedResolver(["127.0.0.1"], ["127.0.0.2"])
    backend = PublicOnly(resolver, admit=lambda address: address == "127.0.0.1")
    with receiving() as receiver, httpx.Client(transport=PublicOnlyTransport(backend)) as http:
        port = receiver.server.server_address[1]
        answer = http.post(f"http://rebind.test:{port}/hooks", content=b"{}")
    assert answer.status_code == 200
    assert resolver.asked == [("rebind.test", port)]
    assert [r.headers["host"] for r in receiver.received] == [f"rebind.test:{port}"]


def test_a_name_with_any_private_address_is_refused_without_connecting() -> None:
    resolver = ScriptedResolver(["93.184.216.34", "127.0.0.1"])
    with (
        receiving() as receiver,
        httpx.Client(transport=PublicOnlyTransport(PublicOnly(resolver))) as http,
    ):
        port = receiver.server.server_address[1]
        with pytest.raises(httpx.ConnectError) as refused:
            http.post(f"http://mixed.test:{port}/hooks", content=b"{}")
    assert str(refused.value) == "refused: mixed.test resolves to 127.0.0.1"
    assert receiver.received == []


def test_a_live_endpoint_whose_name_now_resolves_to_loopback_is_not_sent_to(
    engine: sa.Engine,
) -> None:
    """`localhost` stands for a name that was public when the endpoint was saved."""
    with receiving() as receiver:
        app = new_app(engine, start=T0)
        port = receiver.server.server_address[1]
        with engine.begin() as conn:
            conn.execute(
                sa.update(environments).where(environments.c.id == app.env_id).values(kind="live")
            )
            webhooks.create_endpoint(
                conn, app.env_id, {"url": f"http://localhost:{port}/hooks"}, T0, allow_private=True
            )
        app.enroll({"member": "ann"}, T0)
        # member.enrolled (program.published came before the endpoint): tried, refused
        assert run(Deliverer(engine, FakeClock(T0), threads=1)) == 1
        assert receiver.received == []
        with engine.connect() as conn:
            errors = conn.execute(sa.select(webhook_attempts.c.error)).scalars().all()
            pending = conn.execute(
                sa.select(webhook_deliveries.c.state, webhook_deliveries.c.next_attempt_at)
            ).all()
        assert len(errors) == 1
        assert all(e.startswith("ConnectError: refused: localhost resolves to ") for e in errors)
        assert all("127.0.0.1" in e for e in errors)
        retry_at = T0 + timedelta(seconds=5)
        assert [(state, at.replace(tzinfo=UTC)) for state, at in pending] == [("pending", retry_at)]
        # The same endpoint with private addresses allowed (as a sandbox is) is reached.
        assert Deliverer(engine, FakeClock(retry_at), threads=1, allow_private=True).run_once()
        assert len(receiver.received) == 1


@pytest.mark.parametrize(
    "transport",
    [
        lambda resolver: PublicOnlyTransport(PublicOnly(resolver, admit=lambda _address: True)),
        lambda resolver: Transport(Resolving(resolver)),  # a sandbox's
    ],
    ids=["live", "sandbox"],
)
def test_a_name_that_never_resolves_holds_a_sender_no_longer_than_its_time(
    transport: Any,
) -> None:
    """`getaddrinfo` takes no timeout: a DNS server that never answers held the sender for as
    long as the system's resolver kept asking. The look-up now gets what is left of the
    request's time, like every socket operation."""
    answered = threading.Event()

    def never(host: str, port: int) -> list[str]:
        answered.wait(30)
        return ["127.0.0.1"]

    with httpx.Client(transport=transport(never)) as http, within(0.5):
        began = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout) as late:
            http.post("http://stuck.test:9/hooks", content=b"{}")
        took = time.monotonic() - began
    answered.set()
    assert str(late.value) == "stuck.test did not resolve in time"
    assert took < 5  # the resolver would have taken 30 s


def test_a_name_that_never_resolves_holds_up_no_other_name() -> None:
    """Ten sends to a name whose DNS never answers, then one to a name that does: the look-ups
    of the stuck name share one thread, so the other is looked up at once (a pool of eight
    look-up threads, all taken by the stuck name, made it time out too)."""
    answered = threading.Event()

    def resolver(host: str, port: int) -> list[str]:
        if host == "stuck.test":
            answered.wait(30)
        return ["127.0.0.1"]

    transport = Transport(Resolving(resolver))
    failures: list[str] = []

    def stuck() -> None:
        with httpx.Client(transport=transport) as http, within(1.0):
            try:
                http.post("http://stuck.test:9/hooks", content=b"{}")
            except httpx.ConnectTimeout as exc:
                failures.append(str(exc))

    senders = [threading.Thread(target=stuck) for _ in range(10)]
    for sender in senders:
        sender.start()
    time.sleep(0.2)  # every stuck look-up under way
    with receiving() as receiver, httpx.Client(transport=transport) as http, within(0.8):
        port = receiver.server.server_address[1]
        answer = http.post(f"http://good.test:{port}/hooks", content=b"{}")
    for sender in senders:
        sender.join(10)
    answered.set()
    assert answer.status_code == 200
    assert failures == ["stuck.test did not resolve in time"] * 10
