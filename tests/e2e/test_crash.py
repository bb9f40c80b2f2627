"""Crash suite: a synthetic chain's traffic (orders, open tabs, refunds, voids, gift card sales,
holds and captures) sent to two API servers while two workers post and deliver, with a random
API or worker process SIGKILLed and restarted every 0.5 to 3 s and the PostgreSQL server
crashed and restarted once. Afterwards nothing may be lost or counted twice.

`PUNCHCARD_CRASH_ORDERS` sets the size (2,000 in `make test`, 10,000 in `make soak`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from punchcard.audit import run_audit
from punchcard.engine.money import parse_money
from punchcard.services.clock import SystemClock
from punchcard.services.webhooks import EVENTS, the_message
from punchcard.synthetic import Operation, operations
from tests.e2e.chaos import PrivateCluster, Retrying, Supervised, chaos, postgres_bin, wait_ready
from tests.e2e.conftest import PUNCHCARD, free_port
from tests.integration.receiver import receiving

ORDERS = int(os.environ.get("PUNCHCARD_CRASH_ORDERS", "2000"))
LANES = 8


def lane_of(op: Operation, lanes: dict[str, int]) -> int:
    """Each member's requests (and each card's) in one lane, in time order, so what depends on
    an earlier request always comes after it; lanes run concurrently."""
    body = op.body or {}
    if op.kind == "enroll":
        key = f"member:{body['id']}"
    elif op.kind == "place_order":
        key = f"member:{body['member']}"
        lanes[f"order:{body['id']}"] = lanes.setdefault(key, hash(key) % LANES)
    elif op.kind in ("close_order", "refund", "void"):
        key = f"order:{op.path.split('/')[3]}"
    elif op.kind == "issue_gift_card":
        key = f"card:{body['id']}"
    elif op.kind == "authorize_gift_card":
        key = f"card:{op.path.split('/')[3]}"
        lanes[f"hold:{body['id']}"] = lanes.setdefault(key, hash(key) % LANES)
    elif op.kind == "capture_gift_card":
        key = f"hold:{op.path.split('/')[4]}"
    else:
        raise AssertionError(f"no lane for {op.kind}")
    return lanes.setdefault(key, hash(key) % LANES)


def expected_card_balances(ops: list[Operation]) -> dict[str, int]:
    """What each gift card holds when every request applied exactly once."""
    balances: dict[str, int] = {}
    held: dict[str, tuple[str, int]] = {}
    for op in ops:
        if op.kind == "issue_gift_card":
            assert op.body is not None
            balances[op.body["id"]] = parse_money(op.body["amount"])
        elif op.kind == "authorize_gift_card":
            assert op.body is not None
            held[op.body["id"]] = (op.path.split("/")[3], parse_money(op.body["amount"]))
        elif op.kind == "capture_gift_card":
            card, amount = held[op.path.split("/")[4]]
            balances[card] -= amount
    return balances


def settle(engine: sa.Engine, timeout_s: float = 180) -> dict[str, int]:
    """Wait until nothing is pending: postings, events after an endpoint's cursor, retries."""
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            counts = {
                "postings": conn.exec_driver_sql(
                    "SELECT count(*) FROM orders WHERE post_state = 'pending'"
                ).scalar_one(),
                "outbox": conn.exec_driver_sql(
                    "SELECT count(*) FROM outbox o JOIN webhook_endpoints e"
                    " ON e.env_id = o.env_id AND e.state = 'enabled'"
                    " WHERE (o.tx, o.id) > (e.cursor_tx, e.cursor_id)"
                ).scalar_one(),
                "deliveries": conn.exec_driver_sql(
                    "SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'"
                ).scalar_one(),
            }
        if not any(counts.values()):
            return counts
        time.sleep(0.5)
    raise AssertionError(f"work still pending after {timeout_s} s: {counts}")


@pytest.mark.postgres
def test_nothing_is_lost_or_counted_twice_while_processes_and_postgres_crash(
    postgres_template: str,  # PostgreSQL tests are on: CI has the server installed
) -> None:
    bindir = postgres_bin()
    assert bindir is not None, "PostgreSQL tests are on but initdb is not installed"
    cluster = PrivateCluster(bindir)
    processes: list[Supervised] = []
    engine = sa.create_engine(cluster.url, pool_pre_ping=True)
    try:
        subprocess.run(
            [PUNCHCARD, "db", "upgrade", "--database", cluster.url],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        made = json.loads(
            subprocess.run(
                [PUNCHCARD, "tenant", "create", "Crash Chain", "--json", "--database", cluster.url],
                capture_output=True, text=True, check=True, timeout=120,
            ).stdout
        )  # fmt: skip
        env = {
            "PUNCHCARD_WEBHOOK_ALLOW_PRIVATE": "1",
            "PUNCHCARD_IN_FLIGHT_LEASE_S": "3",
            "PUNCHCARD_LOG_LEVEL": "error",
        }
        ports = [free_port(), free_port()]
        processes = [
            *(
                Supervised(f"api-{p}", ["serve", "--no-worker", "--database", cluster.url, "--port", str(p)], env)
                for p in ports
            ),
            *(
                Supervised(f"worker-{n}", ["worker", "--database", cluster.url, "--lease-s", "2"], env)
                for n in range(2)
            ),
        ]  # fmt: skip
        for process in processes:
            process.start()
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url in urls:
            wait_ready(url)
        client = Retrying(urls, made["live_key"])
        ops = list(operations(seed=5, orders=ORDERS))
        assert ops[0].kind == "publish_program"
        with receiving() as receiver, httpx.Client() as http:
            # The endpoint first: an event committed before an endpoint exists is not sent to it,
            # and the program's own `program.published` must be delivered like every other.
            made_endpoint = client.send(
                http, "POST", "/v1/webhooks/endpoints", "endpoint", {"url": receiver.url}
            )
            assert made_endpoint.status_code == 201, made_endpoint.text
            for op in ops[:1]:
                assert client.send(http, op.method, op.path, op.idempotency_key, op.body).is_success
            lanes: dict[str, int] = {}
            work: list[list[Operation]] = [[] for _ in range(LANES)]
            for op in ops[1:]:
                work[lane_of(op, lanes)].append(op)
            failures: list[str] = []

            def run(lane: list[Operation]) -> None:
                with httpx.Client() as own:
                    for op in lane:
                        try:
                            client.send(own, op.method, op.path, op.idempotency_key, op.body)
                        except Exception as error:  # recorded and failed below
                            failures.append(f"{op.kind} {op.path}: {error}")
                            return

            threads = [threading.Thread(target=run, args=(lane,)) for lane in work]
            with chaos(processes, seed=11, midway=cluster.crash_and_restart) as counts:
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            assert failures == []
            assert counts["kills"] >= 5 and counts["midway"] == 1, counts
            settle(engine)
            # Every request got a definite answer, and every answer was a success: a retry of
            # an applied request replays its answer instead of failing or applying again.
            statuses = Counter(status for _, status, _ in client.answers)
            assert sum(statuses.values()) == len(ops) + 1  # and the endpoint
            bad = [a for a in client.answers if a[1] >= 300]
            assert bad == []
            with engine.connect() as conn:
                # Every committed event reached the receiver at least once: each one after
                # the endpoint's start, by its webhook-id (a failure's message row keeps it).
                endpoint = conn.exec_driver_sql("SELECT * FROM webhook_endpoints").one()
                message_ids = {
                    the_message(e)[0]
                    for e in conn.execute(
                        EVENTS,
                        {
                            "env": endpoint.env_id,
                            "tx": endpoint.start_tx,
                            "last": endpoint.start_id,
                            "limit": 10**6,
                        },
                    )
                }
                events = conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one()
                assert len(message_ids) == events
                undelivered = conn.exec_driver_sql(
                    "SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'"
                ).scalar_one()
                assert undelivered == 0
                assert message_ids <= set(receiver.ids())
                # Every order exists once, in the state its requests left it in.
                kinds = Counter(op.kind for op in ops)
                order_states = dict(
                    conn.exec_driver_sql("SELECT state, count(*) FROM orders GROUP BY state").all()
                )
                assert sum(order_states.values()) == kinds["place_order"] == ORDERS
                assert order_states.get("voided", 0) == kinds["void"]
                assert order_states.get("open", 0) == 0
                # Each closed order earned once: one accrual transaction per earning order.
                accruals = conn.exec_driver_sql(
                    "SELECT reference, count(*) FROM ledger_transactions "
                    "WHERE kind = 'earn' GROUP BY reference HAVING count(*) > 1"
                ).all()
                assert accruals == []
                unearned = conn.exec_driver_sql(
                    "SELECT count(*) FROM orders o WHERE o.posted_points > 0 AND NOT EXISTS "
                    "(SELECT 1 FROM ledger_transactions t WHERE t.kind = 'earn' "
                    "AND t.reference = 'order:' || o.external_id)"
                ).scalar_one()
                assert unearned == 0
                earning = conn.exec_driver_sql(
                    "SELECT count(*) FROM orders WHERE posted_points > 0"
                ).scalar_one()
                assert earning > ORDERS // 2  # the checks above are about real accruals
                # Gift cards hold exactly what the requests, applied once each, leave on them.
                card_ids = list(
                    conn.exec_driver_sql("SELECT external_id FROM gift_cards").scalars()
                )
            expected = expected_card_balances(ops)
            assert sorted(card_ids) == sorted(expected)
            with httpx.Client(
                base_url=urls[0], headers={"Authorization": f"Bearer {made['live_key']}"}
            ) as http:
                cards = {
                    card: parse_money(
                        http.get(f"/v1/gift-cards/{card}").json()["balance"]["amount"]
                    )
                    for card in card_ids
                }
            assert cards == expected
            findings = run_audit(engine, SystemClock().now())
            assert [(f.check, f.violations[:3]) for f in findings if f.violations] == []
            audit = subprocess.run(
                [PUNCHCARD, "audit", "--database", cluster.url], capture_output=True, text=True, timeout=120
            )  # fmt: skip
            assert audit.returncode == 0, audit.stdout
            assert client.retries > 0  # the crashes really cost some requests their answers
    finally:
        for process in processes:
            process.stop()
        engine.dispose()
        cluster.remove()


def test_lanes_keep_each_members_and_cards_requests_together() -> None:
    ops = list(operations(seed=5, orders=300))[1:]
    lanes: dict[str, int] = {}
    lane_by_key = {op.idempotency_key: lane_of(op, lanes) for op in ops}
    member_lane: dict[str, set[int]] = defaultdict(set)
    order_member = {}
    for op in ops:
        body = op.body or {}
        if op.kind == "place_order":
            order_member[body["id"]] = body["member"]
            member_lane[body["member"]].add(lane_by_key[op.idempotency_key])
        elif op.kind in ("close_order", "refund", "void"):
            order = re.split("/", op.path)[3]
            member_lane[order_member[order]].add(lane_by_key[op.idempotency_key])
    assert member_lane and all(len(found) == 1 for found in member_lane.values())
    assert len(set(lane_by_key.values())) == LANES
    assert Path(PUNCHCARD).exists()
