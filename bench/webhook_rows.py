"""Rows written per delivered webhook event, counted by PostgreSQL (`pg_stat_user_tables`).

Places `--orders` closed orders in process on a database of its own, then lets a deliverer
send every event to a receiver on loopback answering 200 (or `--fail-every` N: every Nth
request answers 500, and its retry 200), and prints the rows inserted, updated and deleted
in each webhook table while it did, and the outbox rows the orders wrote, per event
delivered. Counts, not timings: they hold on a busy machine. Run:
`python bench/webhook_rows.py --database postgresql+psycopg://postgres@127.0.0.1/postgres`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import sqlalchemy as sa

from punchcard.services import webhooks
from punchcard.services.loyalty import Loyalty
from punchcard.services.programs import create_environment
from punchcard.store.database import open_database
from punchcard.worker.delivery import Deliverer

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "src/punchcard/demo/burrito-rewards.yaml"
TABLES = (
    "outbox",
    "webhook_messages",
    "webhook_deliveries",
    "webhook_attempts",
    "webhook_endpoints",
)
START = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = START

    def now(self) -> datetime:
        return self.at


@contextmanager
def receiver(fail_every: int) -> Iterator[tuple[str, list[str]]]:
    """A receiver on loopback: 200, or 500 for every `fail_every`th first sight of an id."""
    seen: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            message = self.headers["webhook-id"]
            with lock:
                first = message not in seen
                seen.append(message)
                fail = fail_every and first and len(set(seen)) % fail_every == 0
            self.send_response(500 if fail else 200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", seen
    finally:
        server.shutdown()


def written(engine: sa.Engine) -> dict[str, dict[str, int]]:
    """Rows inserted, updated (HOT apart) and deleted per table, as the statistics have them."""
    engine.dispose()  # a backend reports its counts when it ends (or, idle, 10 s later)
    time.sleep(0.5)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        rows = conn.exec_driver_sql(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del"
            " FROM pg_stat_user_tables WHERE relname = ANY(%(t)s)",
            {"t": list(TABLES)},
        ).all()
    return {r[0]: {"ins": r[1], "upd": r[2], "hot": r[3], "del": r[4]} for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True, help="a PostgreSQL server's URL")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--fail-every", type=int, default=0)
    args = parser.parse_args()
    admin = sa.create_engine(args.database, isolation_level="AUTOCOMMIT")
    name = f"punchcard_webhook_rows_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = open_database(sa.make_url(args.database).set(database=name).render_as_string(False))
    try:
        with receiver(args.fail_every) as (url, seen):
            app = Loyalty(engine, create_environment(engine, "bench", START, clock=START))
            with engine.begin() as conn:
                webhooks.create_endpoint(conn, app.env_id, {"url": url}, START, allow_private=True)
            app.publish(PROGRAM.read_text(), START)
            for n in range(args.orders):
                app.enroll({"member": f"m{n}"}, START)
                app.place_order(
                    {
                        "id": f"o{n}",
                        "member": f"m{n}",
                        "status": "closed",
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
                    START,
                )
            app.run_due(START)
            with engine.connect() as conn:
                events = conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one()
            before = written(engine)
            clock = Clock()
            deliverer = Deliverer(engine, clock, allow_private=True)
            deadline = time.monotonic() + 300
            while len(set(seen)) < events and time.monotonic() < deadline:
                deliverer.run_once()
                deliverer.drain()
                clock.at += timedelta(seconds=5)  # retries come due
            for _ in range(3):  # the last failures' retries
                clock.at += timedelta(seconds=5)
                deliverer.run_once()
                deliverer.drain()
            deliverer.stop()
            after = written(engine)
        delta = {
            table: {k: after[table][k] - before[table][k] for k in after[table]} for table in TABLES
        }
        by_delivery = sum(d["ins"] + d["upd"] + d["del"] for d in delta.values())
        print(
            json.dumps(
                {
                    "events": events,
                    "delivered": len(set(seen)),
                    "posts": len(seen),
                    "outbox_rows_inserted_per_event": before["outbox"]["ins"] / events,
                    "rows_written_by_delivery_per_event": round(by_delivery / events, 3),
                    "by_table": delta,
                }
            )
        )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
