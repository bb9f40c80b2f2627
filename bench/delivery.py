"""The webhook sender alone: CPU per webhook and webhooks/s from a backlog.

bench/end_to_end.py runs the API, the worker and PostgreSQL on the same two cores, so a
change to the sender shows there only through the noise of everything else. Here the orders
are placed first, with no worker running (their events wait in the outbox); then one
`punchcard worker` starts and delivers the backlog to a loopback receiver, and its CPU (read
from /proc) is divided by the webhooks it sent. `--runs` repeats the delivery on new
databases; the figures of each run are printed, then their median.

Run: `python bench/delivery.py --orders 1500 --runs 3` (PostgreSQL, as end_to_end.py's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import sqlalchemy as sa
from end_to_end import (
    Receiver,
    cli,
    database,
    mark,
    run_clients,
    serve,
    setup,
    start,
    stop,
    traffic,
    tree_cpu,
)

ENV = {"PUNCHCARD_WEBHOOK_ALLOW_PRIVATE": "1", "PUNCHCARD_LOG_LEVEL": "warning"}


def one_run(orders: int) -> dict[str, float]:
    members, bodies = traffic(orders)
    with database("postgres") as url:
        cli({}, "db", "upgrade", "--database", url)
        key = json.loads(cli({}, "tenant", "create", "Bench", "--json", "--database", url))
        receiver = Receiver()
        engine = sa.create_engine(url)
        try:
            base, server = serve(url, ENV)
            try:
                marks = setup(base, key["live_key"], receiver, members, url)
                run_clients(base, key["live_key"], bodies, 8, None)
            finally:
                stop([server])
            with engine.connect() as conn:
                backlog = conn.execute(
                    sa.text("SELECT count(*) FROM outbox WHERE id > :after"),
                    {"after": marks["outbox_id"]},
                ).scalar_one()
            start_mark = mark(url, receiver)
            worker = start(["worker", "--database", url], ENV)
            try:
                while receiver.count() == start_mark["received"]:  # its start-up not counted
                    time.sleep(0.005)
                began, first = time.perf_counter(), receiver.count()
                cpu_before = tree_cpu([worker.pid])
                while receiver.count() - start_mark["received"] < backlog:
                    time.sleep(0.02)
                seconds = time.perf_counter() - began
                cpu = tree_cpu([worker.pid]) - cpu_before
                sent = start_mark["received"] + backlog - first
            finally:
                stop([worker])
        finally:
            receiver.close()
            engine.dispose()
    return {
        "webhooks": backlog,
        "webhooks_per_s": round(sent / seconds, 1),
        "worker_cpu_ms_per_webhook": round(cpu / sent * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.orders) for _ in range(args.runs)]
    for run in runs:
        print(json.dumps(run))
    print(
        json.dumps(
            {
                "bench": "delivery",
                "median_webhooks_per_s": statistics.median(r["webhooks_per_s"] for r in runs),
                "median_worker_cpu_ms_per_webhook": statistics.median(
                    r["worker_cpu_ms_per_webhook"] for r in runs
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
