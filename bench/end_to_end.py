"""Orders per second end to end, and how close that is to what this machine's PostgreSQL can do.

N client threads place the synthetic chain's orders (`punchcard.synthetic`, seed 7), closed,
over HTTP against a real `punchcard serve` (API only)
while separate `punchcard worker` processes post them and deliver their webhooks to a
receiver on loopback. Reported per database: orders/s accepted (answered 201) and fully
posted (every order posted and every webhook delivered), request latency p50/p95/p99, and
close-to-posted latency. On PostgreSQL the same run measures `pgbench` (TPC-B-like, same
client count, scale = clients) and prints posted orders/s as a ratio of its transactions/s.

It also reads from /proc what the CPU did: the whole machine's CPU time per order, and
PostgreSQL's processes' share of it; the same per `pgbench` transaction. Their quotient,
"ratio ceiling", is the ratio this machine would reach if nothing but PostgreSQL's own work
for our orders used the CPU (no Python at all): how far the database work an order asks
for lets the ratio go.

Prints a JSON line and a table; it never fails a build. Run: `make bench`, or
`python bench/end_to_end.py --databases postgres --clients 8 --orders 3000`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from punchcard.synthetic import operations

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "src" / "punchcard" / "demo" / "burrito-rewards.yaml"
PUNCHCARD = str(Path(sys.executable).parent / "punchcard")
POSTGRES = os.environ.get(
    "PUNCHCARD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


# --- the world around the server -------------------------------------------------------------


class Receiver:
    """A webhook receiver on loopback that answers 204 and counts distinct message ids."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.ids.add(self.headers.get("webhook-id", ""))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A sender closing its keep-alive connection is not an error worth a traceback.
                if not isinstance(sys.exc_info()[1], ConnectionResetError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.ids)

    def close(self) -> None:
        self.server.shutdown()


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far: by the whole machine, and by PostgreSQL's processes (None when
    it runs where /proc does not show it). Read from /proc; differences of two readings are
    what a stretch of the run cost."""

    machine: float
    database: float | None

    @classmethod
    def now(cls) -> Cpu:
        tick = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        idle = int(fields[3]) + int(fields[4])  # idle and iowait
        machine = (sum(int(f) for f in fields[:8]) - idle) / tick  # not guest time, counted in user
        database = 0
        found = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue  # gone since the listing
            if "(postgres)" not in text:
                continue
            found = True
            after = text.rsplit(")", 1)[1].split()  # fields from the 3rd on: state, ppid, ...
            database += int(after[11]) + int(after[12])  # utime, stime
            if "(postgres)" not in _stat_of(after[1]):
                # The postmaster: its reaped children's time is every backend that has exited.
                database += int(after[13]) + int(after[14])  # cutime, cstime
        return cls(machine, database / tick if found else None)

    def since(self, before: Cpu) -> Cpu:
        used = None
        if self.database is not None and before.database is not None:
            used = self.database - before.database
        return Cpu(self.machine - before.machine, used)


def written(url: str) -> tuple[int, int] | None:
    """PostgreSQL's count of the database's committed transactions and of the rows they
    inserted, updated or deleted (None on SQLite). Read once the clients are gone: a backend
    reports its counts when it exits, or within a second."""
    if not url.startswith("postgresql"):
        return None
    time.sleep(1.0)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted"
                " FROM pg_stat_database WHERE datname = current_database()"
            ).one()
    finally:
        engine.dispose()
    return int(row[0]), int(row[1])


def per(after: tuple[int, int] | None, before: tuple[int, int] | None, count: int) -> Any:
    """(transactions, rows written) per order or per transaction, from two `written` readings."""
    if after is None or before is None:
        return None
    return [round((a - b) / count, 1) for a, b in zip(after, before, strict=True)]


def _stat_of(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A new, empty database of `kind`, dropped afterwards."""
    if kind == "sqlite":
        folder = tempfile.mkdtemp(prefix="punchcard-bench-")
        try:
            yield f"sqlite:///{folder}/bench.sqlite3"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    name = f"punchcard_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


PROFILE: Path | None = None  # --profile: record each process's stacks with py-spy


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [PUNCHCARD, *args]
    if PROFILE is not None:
        out = PROFILE / f"{args[0]}-{uuid.uuid4().hex[:6]}.txt"
        command = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--format",
            "raw",
            "--rate",
            "50",
            "-o",
            str(out),
            "--",
            *command,
        ]
    return subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready")


# --- the load ------------------------------------------------------------------------------


def traffic(orders: int) -> tuple[list[str], list[dict[str, Any]]]:
    """The synthetic chain's members and orders (seed 7), each order closed as it is placed.
    Gift card tenders are paid by card instead: this run sells no gift cards."""
    members, bodies = [], []
    for op in operations(seed=7, orders=orders):
        if op.kind == "enroll" and op.body is not None:
            members.append(op.body["id"])
        elif op.kind == "place_order" and op.body is not None:
            body = {**op.body, "status": "closed"}
            if "tenders" in body:
                body["tenders"] = [
                    {k: v for k, v in {**t, "type": "card"}.items() if k != "gift_card"}
                    for t in body["tenders"]
                ]
            bodies.append(body)
    return members, bodies


@dataclass
class Load:
    """What the clients saw: latencies in seconds, and when each order's close was answered."""

    latencies: list[float] = field(default_factory=list)
    answered: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_clients(url: str, key: str, bodies: list[dict[str, Any]], clients: int) -> Load:
    load = Load()
    queue = iter(bodies)
    take = threading.Lock()

    def client() -> None:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as http:
            while True:
                with take:
                    body = next(queue, None)
                if body is None:
                    return
                began = time.perf_counter()
                answer = http.post(
                    "/v1/orders", json=body, headers={"Idempotency-Key": f"place-{body['id']}"}
                )
                done = time.perf_counter()
                with load.lock:
                    load.latencies.append(done - began)
                    if answer.status_code == 201:
                        load.answered[body["id"]] = done
                    else:
                        load.errors.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return load


def watch_postings(
    engine: sa.Engine, expected: int, receiver: Receiver, timeout_s: float
) -> tuple[dict[str, float], float]:
    """Poll until every order is posted and every webhook message delivered (received, and
    recorded as delivered); returns when each order was first seen posted, and when that was."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            posted = conn.exec_driver_sql(
                "SELECT external_id FROM orders WHERE post_state = 'posted'"
            ).scalars()
            now = time.perf_counter()
            for order_id in posted:
                seen.setdefault(order_id, now)
            messages = conn.exec_driver_sql("SELECT count(*) FROM webhook_messages").scalar_one()
            pending = conn.exec_driver_sql(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            ).scalar_one()
            unrecorded = conn.exec_driver_sql(  # received, but its outcome not yet recorded
                "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'"
            ).scalar_one()
        done = pending == 0 and unrecorded == 0 and receiver.count() >= messages
        if len(seen) >= expected and done:
            return seen, time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError(f"not done in {timeout_s} s: {len(seen)} of {expected} posted")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(kind: str, clients: int, orders: int, workers: int) -> dict[str, Any]:
    members, bodies = traffic(orders)
    with database(kind) as url:
        env = {"PUNCHCARD_WEBHOOK_ALLOW_PRIVATE": "1", "PUNCHCARD_LOG_LEVEL": "warning"}
        subprocess.run(
            [PUNCHCARD, "db", "upgrade", "--database", url],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        )
        made = subprocess.run(
            [PUNCHCARD, "tenant", "create", "Bench", "--json", "--database", url],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        )
        key = json.loads(made.stdout)["live_key"]
        port = free_port()
        server = start(["serve", "--no-worker", "--database", url, "--port", str(port)], env)
        started = [server]
        receiver = Receiver()
        engine = sa.create_engine(url)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
                http.post(
                    "/v1/programs/versions",
                    json={"source": PROGRAM.read_text()},
                    headers={"Idempotency-Key": "program"},
                ).raise_for_status()
                http.post(
                    "/v1/webhooks/endpoints",
                    json={"url": receiver.url},
                    headers={"Idempotency-Key": "endpoint"},
                ).raise_for_status()
                for member in members:
                    http.post(
                        "/v1/members", json={"id": member}, headers={"Idempotency-Key": member}
                    ).raise_for_status()
            for _ in range(workers):
                started.append(start(["worker", "--database", url], env))
            written_before = written(url)
            cpu_before = Cpu.now()
            began = time.perf_counter()
            load = run_clients(base, key, bodies, clients)
            accepted_s = time.perf_counter() - began
            seen, finished = watch_postings(engine, orders, receiver, timeout_s=600)
            total_s = finished - began
            cpu = Cpu.now().since(cpu_before)
            to_posted = [seen[i] - t for i, t in load.answered.items() if i in seen]
            with engine.connect() as conn:
                deliveries = conn.exec_driver_sql(
                    "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
                ).scalar_one()
        finally:
            for process in started:
                process.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            for process in started:
                process.wait(timeout=30)
            receiver.close()
            engine.dispose()
        transactions_rows = per(written(url), written_before, orders)
        return {
            "database": kind,
            "clients": clients,
            "orders": orders,
            "workers": workers,
            "errors": len(load.errors),
            "accepted_per_s": round(len(load.answered) / accepted_s, 1),
            "posted_per_s": round(orders / total_s, 1),
            "latency_ms": {
                "p50": round(percentile(load.latencies, 0.50) * 1000, 1),
                "p95": round(percentile(load.latencies, 0.95) * 1000, 1),
                "p99": round(percentile(load.latencies, 0.99) * 1000, 1),
            },
            "close_to_posted_ms": {
                "p50": round(statistics.median(to_posted) * 1000, 1),
                "p95": round(percentile(to_posted, 0.95) * 1000, 1),
            },
            "webhooks_delivered": deliveries,
            "transactions_and_rows_written_per_order": transactions_rows,
            "cpu_ms_per_order": round(cpu.machine / orders * 1000, 2),
            "database_cpu_ms_per_order": (  # SQLite's work is in our processes' share
                None
                if cpu.database is None or kind != "postgres"
                else round(cpu.database / orders * 1000, 2)
            ),
        }


@dataclass(frozen=True)
class Pgbench:
    tps: float
    cpu_ms_per_tx: float  # the whole machine's: pgbench's client and PostgreSQL's backends
    rows_written_per_tx: float


def run_pgbench(clients: int, seconds: int) -> Pgbench | None:
    """TPC-B-like transactions/s on the same PostgreSQL, scale = clients, and what one cost
    the machine in CPU; None without pgbench."""
    if shutil.which("pgbench") is None:
        return None
    with database("postgres") as url:
        parts = sa.make_url(url)
        where = [
            "-h",
            parts.host or "127.0.0.1",
            "-p",
            str(parts.port or 5432),
            "-U",
            parts.username or "postgres",
        ]
        subprocess.run(
            ["pgbench", *where, "-i", "-q", "-s", str(clients), parts.database or ""],
            capture_output=True,
            check=True,
        )
        written_before = written(url)
        cpu_before = Cpu.now()
        done = subprocess.run(
            [
                "pgbench",
                *where,
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                parts.database or "",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        cpu = Cpu.now().since(cpu_before)
        found = re.search(r"tps = ([0-9.]+)", done.stdout)
        counted = re.search(r"number of transactions actually processed: ([0-9]+)", done.stdout)
        if found is None or counted is None:
            return None
        transactions = int(counted.group(1))
        rows = per(written(url), written_before, transactions)
    return Pgbench(float(found.group(1)), cpu.machine / transactions * 1000, rows[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1, help="`punchcard worker` processes")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--profile", type=Path, help="write py-spy stacks of each process here")
    args = parser.parse_args()
    if args.profile:
        global PROFILE
        PROFILE = args.profile
        args.profile.mkdir(parents=True, exist_ok=True)
    results = []
    for kind in args.databases.split(","):
        try:
            results.append(measure(kind, args.clients, args.orders, args.workers))
        except Exception as error:  # a benchmark reports, it never fails a build
            results.append({"database": kind, "failed": str(error)})
    pgbench = (
        run_pgbench(args.clients, args.pgbench_seconds) if "postgres" in args.databases else None
    )
    for result in results:
        if result["database"] == "postgres" and pgbench and "posted_per_s" in result:
            result["pgbench_tps"] = round(pgbench.tps, 1)
            result["ratio_to_pgbench"] = round(result["posted_per_s"] / pgbench.tps, 3)
            result["pgbench_cpu_ms_per_tx"] = round(pgbench.cpu_ms_per_tx, 3)
            result["pgbench_rows_written_per_tx"] = pgbench.rows_written_per_tx
            database_ms = result["database_cpu_ms_per_order"]
            if database_ms:
                # The ratio if nothing but PostgreSQL's own work for our orders used the CPU.
                result["ratio_ceiling"] = round(pgbench.cpu_ms_per_tx / database_ms, 3)
    print(json.dumps({"bench": "end_to_end", "results": results}))
    table = Table(title=f"End to end: {args.orders} orders, {args.clients} clients")
    for column in ("database", "accepted/s", "posted/s", "p50 ms", "p95 ms", "p99 ms",
                   "close→posted p50 ms", "tx/order", "rows/order", "CPU ms/order",
                   "db CPU ms/order", "pgbench tps", "rows/tx", "CPU ms/tx", "ratio",
                   "ratio ceiling"):  # fmt: skip
        table.add_column(column)
    for r in results:
        if "failed" in r:
            table.add_row(r["database"], f"failed: {r['failed']}")
            continue
        table.add_row(
            r["database"],
            str(r["accepted_per_s"]),
            str(r["posted_per_s"]),
            str(r["latency_ms"]["p50"]),
            str(r["latency_ms"]["p95"]),
            str(r["latency_ms"]["p99"]),
            str(r["close_to_posted_ms"]["p50"]),
            *[str(n) for n in r["transactions_and_rows_written_per_order"] or ("", "")],
            str(r["cpu_ms_per_order"]),
            str(r["database_cpu_ms_per_order"] or ""),
            str(r.get("pgbench_tps", "")),
            str(r.get("pgbench_rows_written_per_tx", "")),
            str(r.get("pgbench_cpu_ms_per_tx", "")),
            str(r.get("ratio_to_pgbench", "")),
            str(r.get("ratio_ceiling", "")),
        )
    Console(width=max(Console().width, 200)).print(table)  # readable when piped too


if __name__ == "__main__":
    main()
