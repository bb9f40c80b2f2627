"""No event is lost when the worker is killed with SIGKILL mid-delivery and restarted.

A sender moves its endpoint's cursor only when it records a batch: killed mid-batch, it
moved nothing, and the restarted worker sends that batch again (at least once), never
past an event it did not send."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid

import httpx
import sqlalchemy as sa

from punchcard.services.webhooks import EVENTS, the_message
from punchcard.store.tables import outbox, webhook_deliveries, webhook_endpoints

from ..conftest import ROOT
from ..integration.receiver import Reply, receiving
from .conftest import PUNCHCARD, cli, start_server, stop, upgrade


def _worker(database: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            PUNCHCARD,
            "worker",
            "--database",
            database,
            "--worker-interval-ms",
            "50",
            "--lease-s",
            "2",
            "--webhook-allow-private",
            "--log-level",
            "warning",
        ],
        stderr=subprocess.DEVNULL,
    )


def _waiting(conn: sa.Connection) -> tuple[set[str], int]:
    """Every event's webhook-id, and how many are after the endpoint's cursor or due again."""
    endpoint = conn.execute(sa.select(webhook_endpoints)).one()
    events = conn.execute(
        EVENTS,
        {"env": endpoint.env_id, "tx": endpoint.start_tx, "last": endpoint.start_id, "limit": 1000},
    ).all()
    unsent = conn.execute(
        sa.select(sa.func.count()).where(
            outbox.c.env_id == endpoint.env_id,
            sa.tuple_(outbox.c.tx, outbox.c.id) > (endpoint.cursor_tx, endpoint.cursor_id),
        )
    ).scalar_one()
    pending = conn.execute(
        sa.select(sa.func.count()).where(webhook_deliveries.c.state != "delivered")
    ).scalar_one()
    return {the_message(e)[0] for e in events}, unsent + pending


def test_a_killed_worker_loses_no_event(database_url: str) -> None:
    database = database_url
    upgrade(database)
    tenant = json.loads(cli("tenant", "create", "Crash", "--json", "--database", database))
    url, api = start_server(database, "--no-worker", "--webhook-allow-private")
    with receiving(Reply(200, delay_s=0.3)) as receiver:
        worker = _worker(database)
        try:
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {tenant['live_key']}"}, timeout=30
            ) as http:

                def post(path: str, body: dict[str, object]) -> None:
                    answer = http.post(
                        path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
                    )
                    assert answer.status_code == 201, answer.text

                post("/v1/webhooks/endpoints", {"url": receiver.url})
                post(
                    "/v1/programs/versions",
                    {"source": (ROOT / "src/punchcard/demo/burrito-rewards.yaml").read_text()},
                )
                for n in range(3):
                    post("/v1/members", {"id": f"m{n}"})
                    post(
                        "/v1/orders",
                        {
                            "id": f"o{n}",
                            "member": f"m{n}",
                            "lines": [
                                {
                                    "id": "l1",
                                    "sku": "T",
                                    "category": "taco",
                                    "qty": 2,
                                    "unit_price": "3.00",
                                }
                            ],
                        },
                    )
            deadline = time.monotonic() + 30
            while not receiver.received and time.monotonic() < deadline:
                time.sleep(0.05)
            assert receiver.received, "the worker never started delivering"
            worker.send_signal(signal.SIGKILL)  # mid-delivery: the receiver takes 0.3 s per message
            worker.wait(timeout=10)
            before = len(set(receiver.ids()))
            worker = _worker(database)
            engine = sa.create_engine(database)
            with engine.connect() as conn:
                wanted: set[str] = set()
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    wanted, waiting = _waiting(conn)
                    if not waiting and wanted <= set(receiver.ids()):
                        break
                    conn.rollback()
                    time.sleep(0.2)
            engine.dispose()
            # program.published, then 3 x (member.enrolled, order.evaluated, points.posted,
            # punch_card.progressed): every event was received.
            assert len(wanted) == 13
            assert wanted <= set(receiver.ids()), f"lost: {wanted - set(receiver.ids())}"
            assert before < len(wanted)  # the kill really interrupted the deliveries
            # What was in flight when it was killed went again: its cursor had not moved.
            assert len(receiver.ids()) > len(set(receiver.ids()))
        finally:
            stop(worker)  # type: ignore[arg-type]
            stop(api)
