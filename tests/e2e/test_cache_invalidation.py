"""`punchcard serve --processes 2` on PostgreSQL: each API process caches a live key's
principal and the live program version, and a change made anywhere reaches both within a
second (pg_notify to each process's listener), over real HTTP."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from punchcard.store.database import create_engine

from .conftest import PUNCHCARD, cli, start_server, stop, upgrade
from .test_processes import children, owner

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

PROGRAM = (
    Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
).read_text()
RICHER = PROGRAM.replace("points_per_unit: 10", "points_per_unit: 20")  # version 2
NOTICE_S = 1.0  # how soon every process must see a change


class Twins:
    """Two API processes on one port, and requests that say which process answered."""

    def __init__(self, port: int, pids: set[int], key: str) -> None:
        self.port, self.pids, self.key = port, pids, key

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[int, dict[str, Any], int]:
        """The answer on `conn` (kept alive), and the process that gave it."""
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        answer = conn.getresponse()
        data = json.loads(answer.read() or b"{}")
        assert conn.sock is not None
        return answer.status, data, owner(self.pids, self.port, conn.sock.getsockname()[1])

    def each_process(self, method: str, path: str, body_for: Any = None) -> dict[int, Any]:
        """One request answered by each process (new connections until both have answered),
        and the last answer each gave."""
        answers: dict[int, Any] = {}
        for n in range(200):
            conn = self.connect()
            try:
                body, key = body_for(n) if body_for else (None, None)
                status, data, pid = self.send(conn, method, path, body, key)
            finally:
                conn.close()
            answers[pid] = (status, data)
            if set(answers) == self.pids:
                return answers
        raise AssertionError(f"only processes {sorted(answers)} answered")


@pytest.fixture
def twins(postgres_url: str) -> Iterator[tuple[Twins, dict[str, Any], sa.Engine]]:
    upgrade(postgres_url)
    made = json.loads(
        cli("tenant", "create", "Twin Burritos", "--json", "--database", postgres_url)
    )
    url, process = start_server(postgres_url, "--processes", "2", "--no-worker")
    engine = create_engine(postgres_url)
    try:
        pids = children(process.pid)
        assert len(pids) == 2
        yield Twins(int(url.rsplit(":", 1)[1]), pids, made["live_key"]), made, engine
    finally:
        engine.dispose()
        stop(process)


def _until_every_process(twins: Twins, wanted: Any, ask: Any) -> dict[int, Any]:
    """Ask (each time on a new connection) until every process's last answer is `wanted`, or
    NOTICE_S passes; then the last answer of each, from one more round if the time ran out."""
    deadline = time.monotonic() + NOTICE_S
    last: dict[int, Any] = {}
    while time.monotonic() < deadline:
        last.update(ask())
        if set(last) == twins.pids and all(wanted(a) for a in last.values()):
            return last
        time.sleep(0.02)
    return {**last, **ask()}


def test_a_revoked_live_key_is_refused_by_every_process(
    twins: tuple[Twins, dict[str, Any], sa.Engine],
) -> None:
    server, made, engine = twins
    before = server.each_process("GET", "/v1/clock")
    before.update(server.each_process("GET", "/v1/clock"))  # each has read the key: cached
    assert {status for status, _ in before.values()} == {200}
    key_id = "_".join(made["live_key"].split("_", 3)[:3])
    database = engine.url.render_as_string(hide_password=False)
    assert cli("key", "revoke", key_id, "--database", database) == f"revoked {key_id}\n"
    again = subprocess.run(
        [PUNCHCARD, "key", "revoke", made["live_key"], "--database", database],
        capture_output=True,
        text=True,
        check=False,
    )  # the whole key names the same key; once revoked, it is not revoked twice
    assert (again.returncode, again.stdout, again.stderr) == (
        2,
        "",
        f"error: not_found: no key {key_id!r} that is not revoked already\n",
    )
    last = _until_every_process(
        server, lambda a: a[0] == 401, lambda: server.each_process("GET", "/v1/clock")
    )
    assert {pid: (s, d["code"]) for pid, (s, d) in last.items()} == {
        pid: (401, "unauthenticated") for pid in server.pids
    }


def test_a_version_activated_is_seen_at_once_there_and_by_every_process_within_a_second(
    twins: tuple[Twins, dict[str, Any], sa.Engine],
) -> None:
    server, _made, _engine = twins
    conn = server.connect()
    try:
        status, _, _ = server.send(conn, "POST", "/v1/programs/versions", {"source": PROGRAM}, "p1")
        assert status == 201
        assert server.send(conn, "POST", "/v1/members", {"id": "ann"}, "m1")[0] == 201
        orders = iter(range(10_000))

        def order(_n: int) -> tuple[dict[str, Any], str]:
            number = next(orders)
            line = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1}
            body = {"id": f"o{number}", "member": "ann", "lines": [{**line, "unit_price": "1.00"}]}
            return body, f"o{number}"

        def versions() -> dict[int, Any]:
            found = server.each_process("POST", "/v1/orders", order)
            return {pid: (s, d.get("program_version")) for pid, (s, d) in found.items()}

        warm = versions()
        warm.update(versions())  # each process has cached version 1's span
        assert set(warm.values()) == {(201, 1)}
        answered = server.send(conn, "POST", "/v1/programs/versions", {"source": RICHER}, "p2")
        assert answered[0] == 201
        body, key = order(0)
        status, placed, pid = server.send(conn, "POST", "/v1/orders", body, key)
        assert (status, placed["program_version"], pid) == (201, 2, answered[2])  # the same
        last = _until_every_process(server, lambda a: a == (201, 2), versions)
        assert last == {pid: (201, 2) for pid in server.pids}
    finally:
        conn.close()
