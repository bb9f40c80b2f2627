"""`punchcard serve --processes 2`: two API processes on one port, over real HTTP, on SQLite
and PostgreSQL; each answer right, and none left behind when the parent is stopped or killed."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from .conftest import cli, start_server, stop, upgrade

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="reads /proc; children die with the parent on Linux",
)

PROGRAM = Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/punchcard.sqlite3"
    else:
        yield request.getfixturevalue("postgres_url")


def children(parent: int) -> set[int]:
    """The living (not zombie) processes whose parent is `parent`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def owner(pids: set[int], server_port: int, client_port: int) -> int:
    """The process holding the server's end of the connection from `client_port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
            if (local, remote) == (server_port, client_port):
                inodes.add(f"socket:[{fields[9]}]")
    holders = {pid for pid in pids if inodes & sockets(pid)}
    assert len(holders) == 1, (inodes, holders)
    return holders.pop()


def sockets(pid: int) -> set[str]:
    """The sockets a process has open, as /proc names them ("socket:[inode]")."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.add(os.readlink(fd))
        except FileNotFoundError:
            continue  # closed while we looked (another connection ended)
    return found


def enroll(port: int, key: str, member: str, pids: set[int]) -> tuple[int, dict[str, object], int]:
    """One enrolment on a connection of its own: the answer and which process gave it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/v1/members",
            body=json.dumps({"id": member}),
            headers={
                "Authorization": f"Bearer {key}",
                "Idempotency-Key": f"enroll-{member}",
                "Content-Type": "application/json",
            },
        )
        answer = conn.getresponse()
        body = json.loads(answer.read())
        assert conn.sock is not None  # kept alive: the server's end is still open
        return answer.status, body, owner(pids, port, conn.sock.getsockname()[1])
    finally:
        conn.close()


def port_is_free(port: int, within_s: float = 5.0) -> bool:
    """Whether the port can be listened on again within `within_s` (the kernel closes a dead
    process's sockets as it reaps it, not at the instant it is signalled)."""
    deadline = time.monotonic() + within_s
    while not _bindable(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def two_processes(database: str) -> tuple[subprocess.Popen[bytes], int, set[int], str]:
    upgrade(database)
    tenant = json.loads(cli("tenant", "create", "Twin Tacos", "--json", "--database", database))
    url, process = start_server(database, "--processes", "2")
    pids = children(process.pid)
    assert len(pids) == 2
    key = tenant["sandbox_key"]
    answer = httpx.post(
        f"{url}/v1/programs/versions",
        json={"source": PROGRAM.read_text()},
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "p1"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return process, int(url.rsplit(":", 1)[1]), pids, key


def test_two_processes_share_the_port_and_each_request_is_answered_once(database: str) -> None:
    process, port, pids, key = two_processes(database)
    try:
        members = [f"m{n:02}" for n in range(20)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            first = list(pool.map(lambda m: enroll(port, key, m, pids), members))
            again = list(pool.map(lambda m: enroll(port, key, m, pids), members))
        assert [(status, body.get("id")) for status, body, _ in first] == [
            (201, m) for m in members
        ]
        assert [body for _, body, _ in again] == [body for _, body, _ in first]  # replayed
        assert {pid for *_, pid in first + again} == pids  # both processes answered
        engine = sa.create_engine(database)
        with engine.connect() as conn:
            enrolled = conn.execute(sa.text("SELECT external_id FROM members")).scalars().all()
        engine.dispose()
        assert sorted(enrolled) == members  # each exactly once
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not any(alive(pid) for pid in pids)
        assert port_is_free(port)
    finally:
        stop(process)


def test_a_parent_killed_with_sigkill_leaves_no_api_process(database: str) -> None:
    process, port, pids, _ = two_processes(database)
    try:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in pids)
        assert port_is_free(port)
    finally:
        stop(process)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_api_process_that_dies_stops_the_server_for_its_supervisor(database: str) -> None:
    """The parent does not fork again while its worker threads run: it stops the other API
    process and exits 1, so a supervisor restarts the whole server."""
    process, port, pids, _ = two_processes(database)
    try:
        os.kill(min(pids), signal.SIGKILL)
        assert process.wait(timeout=30) == 1
        assert not any(alive(pid) for pid in pids)
        assert port_is_free(port)
    finally:
        stop(process)
