"""Orders per second end to end, what each order costs, and how that compares with `pgbench`.

The synthetic chain's orders (`punchcard.synthetic`, seed 7) are placed closed over HTTP against
a real `punchcard serve` (API only) by a lean asyncio client in its own process (bench/load.py),
while separate `punchcard worker` processes post them and deliver their webhooks to a receiver
on loopback. On PostgreSQL three passes run, each on a new database (SQLite runs the first):

- throughput: `--clients` clients in a closed loop; orders/s accepted (answered 201) and fully
  posted (every order posted and every webhook delivered), latency, and `pgbench` (TPC-B-like,
  same client count, scale = clients) in the same run, as a ratio;
- latency: `--rate` orders/s offered in an open loop; request p50/p95/p99 counted from when
  each order was due;
- census: the same orders with every Punchcard process talking to PostgreSQL through a counting
  proxy (bench/pgwire.py): per order, commits in the request path, round trips and statements
  by kind (API and worker apart), rows written per table (`pg_stat_user_tables`), WAL bytes and
  commit records of this database's transactions (`pg_walinspect` over the run's WAL), and
  PostgreSQL CPU.

CPU is read from /proc and reported per part: the API and worker processes, the PostgreSQL
backends of the bench's own database (other databases' backends, such as other tests', are not
counted), the load generator, the bench process (receiver and watcher), and the rest of the
machine. The "ratio ceiling" is a `pgbench` transaction's CPU (pgbench and its database's
backends) over one order's PostgreSQL CPU: the ratio this machine would reach if nothing but
PostgreSQL's work for our orders used the CPU. The figures are printed beside issue 18's
targets.

Prints a JSON line and tables; it never fails a build. Run: `make bench`, or
`python bench/end_to_end.py --databases postgres --clients 8 --orders 3000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
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
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
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
    """A webhook receiver on loopback that answers 204 and counts distinct message ids.

    Raw asyncio streams in a thread of its own (as bench/load.py sends): it shares the
    machine with what is measured, so it parses no more HTTP than it must (the request line,
    `webhook-id` and `Content-Length`), and keeps each connection alive."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # until the sender closes the connection (IncompleteReadError)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        self.ids.add(value.strip().decode())
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the sender closed its keep-alive connection
        finally:
            writer.close()

    def count(self) -> int:
        return len(self.ids)  # read from another thread: len() of a set is atomic

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """CPU seconds the whole machine has used (every process, not idle or iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])
    return (sum(int(f) for f in fields[:8]) - idle) / TICK  # not guest time, counted in user


def _processes() -> dict[int, tuple[int, float, float]]:
    """Every process: its parent, its own CPU seconds, and those of the children it reaped."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after = stat.read_text().rsplit(")", 1)[1].split()  # fields from the 3rd on
        except OSError:
            continue  # gone since the listing
        own = (int(after[11]) + int(after[12])) / TICK
        reaped = (int(after[13]) + int(after[14])) / TICK
        found[int(stat.parent.name)] = (int(after[1]), own, reaped)
    return found


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and all their descendants, living or reaped."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, list(pids)
    while stack:
        pid = stack.pop()
        if pid in table:
            total += table[pid][1] + table[pid][2]
            stack.extend(children.get(pid, []))
    return total


class Backends:
    """CPU seconds of the PostgreSQL backends serving some databases, and only those: the
    other databases' backends (other tests, other benches) and the server's own background
    processes are not counted. A thread lists the backends (`pg_stat_activity`, from a
    connection to another database) and reads their CPU from /proc every 0.1 s; a backend
    that exits between two readings loses at most its last 0.1 s."""

    def __init__(self, *urls: str) -> None:
        self.names = [sa.make_url(url).database for url in urls]
        self.engine = sa.create_engine(POSTGRES, poolclass=sa.pool.StaticPool)
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _read(self) -> dict[int, float]:
        with self.engine.connect() as conn:
            pids = conn.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = ANY(:names)"
                    " AND backend_type = 'client backend'"
                ),
                {"names": self.names},
            ).scalars()
            table = _processes()
            return {pid: table[pid][1] for pid in pids if pid in table}

    def _watch(self) -> None:
        while not self.done.wait(0.1):
            self.last.update(self._read())

    def __enter__(self) -> Backends:
        self.base = self._read()
        self.last = dict(self.base)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()
        self.last.update(self._read())
        self.engine.dispose()

    def used(self) -> float:
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())


@dataclass(frozen=True)
class Stats:
    """PostgreSQL's counts for one database: committed and rolled back transactions, rows
    inserted, updated (HOT or not) and deleted per table, and where the WAL was. Backends
    report their counts when they exit (or within a second, or ten, when idle): so they
    are read with no Punchcard process running."""

    commits: int
    rollbacks: int
    tables: dict[str, tuple[int, int, int, int]]  # inserted, updated, of which HOT, deleted
    lsn: str
    oid: int

    @classmethod
    def now(cls, url: str) -> Stats:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                database = conn.exec_driver_sql(
                    "SELECT d.xact_commit, d.xact_rollback, pg_current_wal_flush_lsn()::text, d.datid"
                    " FROM pg_stat_database d WHERE d.datname = current_database()"
                ).one()
                tables = conn.exec_driver_sql(
                    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del"
                    " FROM pg_stat_user_tables"
                ).all()
        finally:
            engine.dispose()
        return cls(
            int(database[0]),
            int(database[1]),
            {str(t[0]): (int(t[1]), int(t[2]), int(t[3]), int(t[4])) for t in tables},
            str(database[2]),
            int(database[3]),
        )

    def rows_since(self, before: Stats) -> dict[str, list[int]]:
        """Rows written per table since `before`: [inserted, updated, of which HOT, deleted]."""
        moved = {}
        for name, now in self.tables.items():
            was = before.tables.get(name, (0, 0, 0, 0))
            delta = [a - b for a, b in zip(now, was, strict=True)]
            if any(delta):
                moved[name] = delta
        return moved


@contextmanager
def wal_kept(url: str) -> Iterator[None]:
    """Keep the server's WAL from here until the end of the block: a temporary physical
    replication slot that reserves it at once (so `wal_since` can read it even if other
    databases' work makes checkpoints meanwhile). It goes with its session, whatever happens."""
    engine = sa.create_engine(url, poolclass=sa.pool.StaticPool)
    try:
        with engine.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_create_physical_replication_slot(:name, true, true)"),
                {"name": f"punchcard_bench_{uuid.uuid4().hex[:10]}"},
            )
            conn.commit()
            yield
    finally:
        engine.dispose()


def wal_since(url: str, before: Stats, after: Stats) -> dict[str, int] | None:
    """The WAL records of this database's transactions between two readings: their bytes,
    how many of those were full-page images (the first change to a page after a checkpoint
    writes the whole page), and how many records were commits (`pg_walinspect`, which loads
    without a restart). The WAL of other databases on the same server is left out; None if
    the WAL is gone (recycled)."""
    engine = sa.create_engine(url)
    pattern = f"% rel %/{after.oid}/%"
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "WITH r AS (SELECT xid, resource_manager, record_type, record_length,"
                    "   fpi_length, block_ref"
                    "  FROM pg_get_wal_records_info(CAST(:a AS pg_lsn), CAST(:b AS pg_lsn))),"
                    " ours AS (SELECT DISTINCT xid FROM r"
                    "  WHERE xid <> '0' AND block_ref LIKE :pattern)"
                    " SELECT count(*) FILTER (WHERE resource_manager = 'Transaction'"
                    "   AND record_type LIKE 'COMMIT%' AND xid IN (SELECT xid FROM ours)),"
                    "  coalesce(sum(record_length) FILTER (WHERE xid IN (SELECT xid FROM ours)"
                    "   OR block_ref LIKE :pattern), 0),"
                    "  coalesce(sum(fpi_length) FILTER (WHERE xid IN (SELECT xid FROM ours)"
                    "   OR block_ref LIKE :pattern), 0)"
                    " FROM r"
                ),
                {"a": before.lsn, "b": after.lsn, "pattern": pattern},
            ).one()
    except sa.exc.DBAPIError as error:
        print(f"WAL not read: {error.orig}", file=sys.stderr)
        return None
    finally:
        engine.dispose()
    return {"commits": int(row[0]), "bytes": int(row[1]), "full_page_bytes": int(row[2])}


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
            "--gil",  # only the thread holding the GIL: where the CPU goes, not who waits
            "--subprocesses",  # `serve` runs its API processes as children
            "--format",
            "raw",
            "--rate",
            "100",
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


Traffic = tuple[list[str], list[dict[str, Any]]]  # the members to enroll, the orders to place
Fill = Callable[[str, dict[str, str]], None]  # given the database and the tenant's keys


def traffic(orders: int, seed: int = 7) -> Traffic:
    """The synthetic chain's members and orders, each order closed as it is placed. Gift card
    tenders are paid by card instead: this run sells no gift cards."""
    members, bodies = [], []
    for op in operations(seed=seed, orders=orders):
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


@dataclass(frozen=True)
class Load:
    """What the clients saw: latencies in seconds, when each order's close was answered (on
    this machine's monotonic clock), and the load generator's own CPU seconds."""

    latencies: list[float]
    answered: dict[str, float]
    errors: list[str]
    cpu_s: float
    seconds: float


def run_clients(
    url: str, key: str, bodies: list[dict[str, Any]], connections: int, rate: float | None
) -> Load:
    """Place the orders with bench/load.py in a process of its own (closed loop, or `rate`
    orders/s offered)."""
    spec = {"url": url, "key": key, "connections": connections, "rate": rate, "orders": bodies}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py")],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(done.stdout)
    return Load(r["latencies"], r["answered"], r["errors"], r["cpu_s"], r["ended"] - r["began"])


def watch_postings(
    engine: sa.Engine, marks: dict[str, int], expected: int, receiver: Receiver, timeout_s: float
) -> tuple[dict[str, float], float]:
    """Poll until `expected` orders placed after `marks` are posted and the receiver has had
    every event made after them (`mark`); returns when each order was first seen posted, and
    when all was done. Reads only what the run added, so a database loaded with a million
    orders costs no more to watch."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            posted = conn.execute(
                sa.text(
                    "SELECT external_id FROM orders WHERE id > :after AND post_state = 'posted'"
                ),
                {"after": marks["order_id"]},
            ).scalars()
            now = time.perf_counter()
            for order_id in posted:
                seen.setdefault(order_id, now)
            events = conn.execute(
                sa.text("SELECT count(*) FROM outbox WHERE id > :after"),
                {"after": marks["outbox_id"]},
            ).scalar_one()
        if len(seen) >= expected and receiver.count() - marks["received"] >= events:
            return seen, time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError(f"not done in {timeout_s} s: {len(seen)} of {expected} posted")


def mark(url: str, receiver: Receiver) -> dict[str, int]:
    """Where the run starts: the outbox's and the orders' highest ids, and the events the
    receiver has had (what the run adds comes after them)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            outbox_id, order_id = conn.exec_driver_sql(
                "SELECT (SELECT coalesce(max(id), 0) FROM outbox),"
                " (SELECT coalesce(max(id), 0) FROM orders)"
            ).one()
    finally:
        engine.dispose()
    return {"outbox_id": outbox_id, "order_id": order_id, "received": receiver.count()}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass(frozen=True)
class Pass:
    """One pass of the bench, on a new database: how the orders are sent, what is counted."""

    name: str  # throughput | latency | census
    connections: int
    orders: int
    rate: float | None = None  # orders/s offered (open loop); None: closed loop
    census: bool = False  # through the counting proxy (bench/pgwire.py)


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PUNCHCARD, *args], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return done.stdout


def serve(url: str, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    server = start(["serve", "--no-worker", "--database", url, "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base)
    return base, server


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
    for process in processes:
        process.wait(timeout=30)


def proxied(url: str, port: int) -> str:
    """`url` with its host and port made the census proxy's."""
    return sa.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def setup(base: str, key: str, receiver: Receiver, members: list[str], url: str) -> dict[str, int]:
    """The program, the webhook endpoint and the members; returns the `mark` taken once the
    endpoint exists (the program's event, made before it, is never sent to it)."""
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
        marks = mark(url, receiver)
        for member in members:
            http.post(
                "/v1/members", json={"id": member}, headers={"Idempotency-Key": member}
            ).raise_for_status()
    return marks


def measure(
    kind: str, run: Pass, workers: int, work: Traffic | None = None, fill: Fill | None = None
) -> dict[str, Any]:
    """One pass on a new database: `work` (by default the synthetic chain's first
    `run.orders` orders and their members) after the setup, and `fill` run on the database
    in between, with no Punchcard process running (bench/scale.py loads it)."""
    members, bodies = work if work is not None else traffic(run.orders)
    postgres = kind == "postgres"
    env = {"PUNCHCARD_WEBHOOK_ALLOW_PRIVATE": "1", "PUNCHCARD_LOG_LEVEL": "warning"}
    with database(kind) as url, ExitStack() as stack:
        cli(env, "db", "upgrade", "--database", url)
        key = json.loads(cli(env, "tenant", "create", "Bench", "--json", "--database", url))
        if postgres:
            admin = sa.create_engine(url)
            with admin.begin() as conn:
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            admin.dispose()
        proxy: subprocess.Popen[bytes] | None = None
        api_url = worker_url = url
        counts = Path(tempfile.mkdtemp(prefix="punchcard-census-")) / "counts.json"
        if run.census and postgres:
            ports = free_port(), free_port()
            target = sa.make_url(url)
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench" / "pgwire.py"),
                    "--upstream",
                    f"{target.host or '127.0.0.1'}:{target.port or 5432}",
                    "--listen",
                    f"api={ports[0]}",
                    "--listen",
                    f"worker={ports[1]}",
                    "--out",
                    str(counts),
                ]
            )
            api_url, worker_url = proxied(url, ports[0]), proxied(url, ports[1])
            time.sleep(1.0)  # the proxy's ports open
        receiver = Receiver()
        engine = sa.create_engine(url)
        started: list[subprocess.Popen[bytes]] = []
        try:
            base, server = serve(api_url, env)
            started = [
                server,
                *(start(["worker", "--database", worker_url], env) for _ in range(workers)),
            ]
            marks = setup(base, key["live_key"], receiver, members, url)
            watch_postings(engine, marks, 0, receiver, timeout_s=600)
            # Start again, so the setup's backends report their counts as they exit and the
            # run is counted from a clean start.
            stop(started)
            if fill is not None:
                fill(url, key)
            marks = mark(url, receiver)
            if postgres:
                stack.enter_context(wal_kept(url))
            before = Stats.now(url) if postgres else None
            base, server = serve(api_url, env)
            workers_started = [
                start(["worker", "--database", worker_url], env) for _ in range(workers)
            ]
            started = [server, *workers_started]
            if proxy is not None:
                proxy.send_signal(signal.SIGUSR1)  # count from here
                time.sleep(0.2)
            cpu_before = {
                "api": tree_cpu([server.pid]),
                "worker": tree_cpu([w.pid for w in workers_started]),
                "bench": time.process_time(),
                "proxy": tree_cpu([proxy.pid]) if proxy else 0.0,
                "machine": machine_cpu(),
            }
            with Backends(url) if postgres else nullcontext() as backends:
                began = time.perf_counter()
                load = run_clients(base, key["live_key"], bodies, run.connections, run.rate)
                # Orders refused (counted as errors) never post: wait for those answered.
                seen, finished = watch_postings(
                    engine, marks, len(load.answered), receiver, timeout_s=600
                )
                cpu = {
                    "api": tree_cpu([server.pid]),
                    "worker": tree_cpu([w.pid for w in workers_started]),
                    "bench": time.process_time(),
                    "proxy": tree_cpu([proxy.pid]) if proxy else 0.0,
                    "machine": machine_cpu(),
                }
            cpu = {part: cpu[part] - cpu_before[part] for part in cpu}
            cpu["postgres"] = backends.used() if backends is not None else 0.0
            cpu["load"] = load.cpu_s
        finally:
            stop(started)
            receiver.close()
            engine.dispose()
            if proxy is not None:
                proxy.send_signal(signal.SIGINT)
                proxy.wait(timeout=30)
        total_s = finished - began
        n = len(bodies)
        cpu["rest of machine"] = cpu["machine"] - sum(
            cpu[p] for p in ("api", "worker", "postgres", "load", "bench", "proxy")
        )
        to_posted = [seen[i] - t for i, t in load.answered.items() if i in seen]
        result: dict[str, Any] = {
            "database": kind,
            "pass": run.name,
            "connections": run.connections,
            "offered_per_s": run.rate,
            "orders": n,
            "workers": workers,
            "errors": len(load.errors),
            "accepted_per_s": round(len(load.answered) / load.seconds, 1),
            "posted_per_s": round(n / total_s, 1),
            "latency_ms": {
                f"p{q}": round(percentile(load.latencies, q / 100) * 1000, 1) for q in (50, 95, 99)
            },
            "close_to_posted_ms": {
                "p50": round(statistics.median(to_posted) * 1000, 1),
                "p95": round(percentile(to_posted, 0.95) * 1000, 1),
            },
            "cpu_ms_per_order": {
                part: round(seconds / n * 1000, 2)
                for part, seconds in cpu.items()
                if part != "proxy" or proxy is not None
            },
        }
        if postgres and before is not None:
            after = Stats.now(url)
            result["census"] = census(
                n,
                before,
                after,
                wal_since(url, before, after),
                json.loads(counts.read_text()) if proxy is not None else None,
                cpu["postgres"],
            )
        shutil.rmtree(counts.parent, ignore_errors=True)
        return result


def census(
    n: int,
    before: Stats,
    after: Stats,
    wal: dict[str, int] | None,
    wire: dict[str, Any] | None,
    postgres_cpu_s: float,
) -> dict[str, Any]:
    """The per-order counts: from PostgreSQL (transactions, rows written per table, WAL) and,
    in the census pass, from the proxy (commits, round trips and statements, API and worker
    apart)."""
    rows = after.rows_since(before)
    figures: dict[str, Any] = {
        "transactions": round(
            (after.commits - before.commits + after.rollbacks - before.rollbacks) / n, 2
        ),
        "rows_written": round(sum(i + u + d for i, u, _, d in rows.values()) / n, 2),
        "rows_written_by_table": {
            table: [round(v / n, 2) for v in counts]
            for table, counts in sorted(rows.items(), key=lambda r: -(r[1][0] + r[1][1] + r[1][3]))
        },
        "wal_commits": round(wal["commits"] / n, 2) if wal else None,
        "wal_kb": round(wal["bytes"] / n / 1024, 2) if wal else None,
        "wal_full_page_kb": round(wal["full_page_bytes"] / n / 1024, 2) if wal else None,
        "postgres_cpu_ms": round(postgres_cpu_s / n * 1000, 3),
    }
    if wire is not None:
        api, worker = wire["api"], wire["worker"]
        kinds = Counter(api["statements_by_kind"]) + Counter(worker["statements_by_kind"])
        figures |= {
            "commits_in_request_path": round(api["commits"] / n, 2),
            "read_only_commits_in_request_path": round(api["read_only_commits"] / n, 2),
            "worker_commits": round(worker["commits"] / n, 2),
            "round_trips": {
                "api": round(api["round_trips"] / n, 2),
                "worker": round(worker["round_trips"] / n, 2),
                "total": round((api["round_trips"] + worker["round_trips"]) / n, 2),
            },
            "statements": {
                "api": round(api["statements"] / n, 2),
                "worker": round(worker["statements"] / n, 2),
                "total": round((api["statements"] + worker["statements"]) / n, 2),
            },
            "statements_by_kind": {k: round(v / n, 2) for k, v in kinds.most_common()},
            "postgres_cpu_ms_via_proxy": round(
                (api["backend_cpu_s"] + worker["backend_cpu_s"]) / n * 1000, 3
            ),
            "top_statements": {"api": api["top_statements"], "worker": worker["top_statements"]},
        }
    return figures


@dataclass(frozen=True)
class Pgbench:
    tps: float
    client_cpu_ms_per_tx: float  # pgbench's own process
    postgres_cpu_ms_per_tx: float  # the backends of pgbench's database, and only those
    machine_cpu_ms_per_tx: float  # everything on the machine, other work included
    rows_written_per_tx: float


def run_pgbench(clients: int, seconds: int) -> Pgbench | None:
    """TPC-B-like transactions/s on the same PostgreSQL, scale = clients, and what one cost in
    CPU (pgbench, its database's backends, the machine); None without pgbench."""
    if shutil.which("pgbench") is None:
        return None
    with database("postgres") as url:
        parts = sa.make_url(url)
        where = ["-h", parts.host or "127.0.0.1", "-p", str(parts.port or 5432),
                 "-U", parts.username or "postgres"]  # fmt: skip
        subprocess.run(
            ["pgbench", *where, "-i", "-q", "-s", str(clients), parts.database or ""],
            capture_output=True,
            check=True,
        )
        before = Stats.now(url)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine = machine_cpu()
        with Backends(url) as backends:
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
        machine = machine_cpu() - machine
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
        found = re.search(r"tps = ([0-9.]+)", done.stdout)
        counted = re.search(r"number of transactions actually processed: ([0-9]+)", done.stdout)
        if found is None or counted is None:
            return None
        n = int(counted.group(1))
        rows = Stats.now(url).rows_since(before)
    return Pgbench(
        float(found.group(1)),
        client / n * 1000,
        backends.used() / n * 1000,
        machine / n * 1000,
        round(sum(i + u + d for i, u, _, d in rows.values()) / n, 2),
    )


TARGETS = "issue 18's targets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--orders", type=int, default=3000, help="orders of the throughput pass")
    parser.add_argument("--rate", type=float, default=200, help="orders/s the latency pass offers")
    parser.add_argument("--rate-seconds", type=int, default=10, help="how long it offers them")
    parser.add_argument("--census-orders", type=int, default=1000)
    parser.add_argument("--passes", default="throughput,latency,census", help="PostgreSQL's")
    parser.add_argument("--workers", type=int, default=1, help="`punchcard worker` processes")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--profile", type=Path, help="write py-spy stacks of each process here")
    args = parser.parse_args()
    if args.profile:
        global PROFILE
        PROFILE = args.profile
        args.profile.mkdir(parents=True, exist_ok=True)
    passes = {
        "throughput": Pass("throughput", args.clients, args.orders),
        "latency": Pass("latency", 32, int(args.rate * args.rate_seconds), rate=args.rate),
        "census": Pass("census", args.clients, args.census_orders, census=True),
    }
    results = []
    for kind in args.databases.split(","):
        chosen = args.passes.split(",") if kind == "postgres" else ["throughput"]
        for name in chosen:
            try:
                results.append(measure(kind, passes[name], args.workers))
            except Exception as error:  # a benchmark reports, it never fails a build
                results.append({"database": kind, "pass": name, "failed": str(error)})
    pgbench = (
        run_pgbench(args.clients, args.pgbench_seconds) if "postgres" in args.databases else None
    )
    for result in results:
        if result["database"] == "postgres" and pgbench and "posted_per_s" in result:
            result["pgbench"] = {
                "tps": round(pgbench.tps, 1),
                "client_cpu_ms_per_tx": round(pgbench.client_cpu_ms_per_tx, 3),
                "postgres_cpu_ms_per_tx": round(pgbench.postgres_cpu_ms_per_tx, 3),
                "machine_cpu_ms_per_tx": round(pgbench.machine_cpu_ms_per_tx, 3),
                "rows_written_per_tx": pgbench.rows_written_per_tx,
            }
            result["ratio_to_pgbench"] = round(result["posted_per_s"] / pgbench.tps, 3)
            database_ms = result["cpu_ms_per_order"]["postgres"]
            if database_ms:
                # The ratio if nothing but PostgreSQL's own work for our orders used the CPU.
                whole = pgbench.client_cpu_ms_per_tx + pgbench.postgres_cpu_ms_per_tx
                result["ratio_ceiling"] = round(whole / database_ms, 3)
    print(json.dumps({"bench": "end_to_end", "results": results}))
    show(results, pgbench)


def show(results: list[dict[str, Any]], pgbench: Pgbench | None) -> None:
    console = Console(width=max(Console().width, 200))  # readable when piped too
    speed = Table(
        title="End to end: speed (latency pass: p50/p95/p99 from when each order was due)"
    )
    for column in ("database", "pass", "orders", "clients", "offered/s", "accepted/s",
                   "posted/s", "p50 ms", "p95 ms", "p99 ms", "close→posted p50 ms", "errors",
                   "pgbench tps", "ratio", "ratio ceiling"):  # fmt: skip
        speed.add_column(column)
    cpu = Table(title="CPU ms per order, by part (read from /proc)")
    parts = ("api", "worker", "postgres", "load", "bench", "proxy", "rest of machine", "machine")
    for column in ("database", "pass", *parts):
        cpu.add_column(column)
    for r in results:
        if "failed" in r:
            speed.add_row(r["database"], r["pass"], f"failed: {r['failed']}")
            continue
        speed.add_row(
            r["database"], r["pass"], str(r["orders"]), str(r["connections"]),
            str(r["offered_per_s"] or "closed loop"), str(r["accepted_per_s"]),
            str(r["posted_per_s"]), *(str(r["latency_ms"][p]) for p in ("p50", "p95", "p99")),
            str(r["close_to_posted_ms"]["p50"]), str(r["errors"]),
            str(r.get("pgbench", {}).get("tps", "")), str(r.get("ratio_to_pgbench", "")),
            str(r.get("ratio_ceiling", "")),
        )  # fmt: skip
        cpu.add_row(
            r["database"], r["pass"], *(str(r["cpu_ms_per_order"].get(p, "")) for p in parts)
        )
    if pgbench is not None:
        cpu.add_row(
            "pgbench", "per tx", "", "", f"{pgbench.postgres_cpu_ms_per_tx:.3f}",
            f"{pgbench.client_cpu_ms_per_tx:.3f} (pgbench)", "", "", "",
            f"{pgbench.machine_cpu_ms_per_tx:.3f}",
        )  # fmt: skip
    console.print(speed)
    console.print(cpu)
    by_pass = {r["pass"]: r for r in results if r["database"] == "postgres" and "failed" not in r}
    census = by_pass.get("census", {}).get("census")
    if census and "round_trips" in census:
        table = Table(title="Statement census per order (census pass, PostgreSQL)")
        for column in ("figure", "API", "worker", "total", "target"):
            table.add_column(column)
        table.add_row("commits that wrote", str(census["commits_in_request_path"]),
                      str(census["worker_commits"]), "", "≤ 1 in the request path")  # fmt: skip
        table.add_row("read-only commits", str(census["read_only_commits_in_request_path"]))
        for figure, target in (("round_trips", "≤ 12"), ("statements", "")):
            table.add_row(figure.replace("_", " "), *(str(census[figure][p]) for p in
                          ("api", "worker", "total")), target)  # fmt: skip
        for kind, count in census["statements_by_kind"].items():
            table.add_row(f"  {kind}", "", "", str(count))
        table.add_row("transactions (pg_stat_database)", "", "", str(census["transactions"]))
        table.add_row("WAL commit records", "", "", str(census["wal_commits"]))
        table.add_row("WAL KB", "", "", str(census["wal_kb"]))
        table.add_row("  of which full-page images", "", "", str(census["wal_full_page_kb"]))
        table.add_row("rows written", "", "", str(census["rows_written"]), "≤ 15")
        for name, (ins, upd, hot, dele) in census["rows_written_by_table"].items():
            table.add_row(f"  {name}", "", "", f"+{ins} ~{upd} (HOT {hot}) -{dele}")
        table.add_row("PostgreSQL CPU ms", "", "", str(census["postgres_cpu_ms"]), "≤ 1.2")
        console.print(table)
    targets = Table(title=f"{TARGETS} (PostgreSQL)")
    for column in ("figure", "measured", "target", "met"):
        targets.add_column(column)
    throughput, latency = by_pass.get("throughput"), by_pass.get("latency")
    rows: list[tuple[str, float | None, str, bool]] = []
    if throughput:
        posted, ratio = throughput["posted_per_s"], throughput.get("ratio_to_pgbench")
        db_ms = throughput["cpu_ms_per_order"]["postgres"]
        rows += [("posted orders/s, webhooks delivered", posted, "≥ 300", posted >= 300),
                 ("ratio to pgbench TPC-B", ratio, "≥ 0.12", ratio is not None and ratio >= 0.12),
                 ("PostgreSQL CPU ms per order", db_ms, "≤ 1.2", db_ms <= 1.2)]  # fmt: skip
    if census and "round_trips" in census:
        commits, trips = census["commits_in_request_path"], census["round_trips"]["total"]
        rows += [("commits in the request path", commits, "≤ 1", commits <= 1),
                 ("round trips per closed order with its posting", trips, "≤ 12", trips <= 12),
                 ("rows written per order", census["rows_written"], "≤ 15",
                  census["rows_written"] <= 15)]  # fmt: skip
    if latency:
        p99 = latency["latency_ms"]["p99"]
        rows.append((f"request p99 ms at {latency['offered_per_s']:g} orders/s offered", p99,
                     "< 50", p99 < 50))  # fmt: skip
    for figure, measured, target, met in rows:
        targets.add_row(figure, str(measured), target, "yes" if met else "no")
    console.print(targets)


if __name__ == "__main__":
    main()
