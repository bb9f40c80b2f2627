"""The statement census: a PostgreSQL wire-protocol proxy that counts what each process sends.

`pg_stat_statements` would count statements server-side, but it loads only through
`shared_preload_libraries` (a server restart). A SQLAlchemy event counter in the API would miss
whatever runs on the psycopg connection directly, and can not see pipelining. So the bench puts
this proxy between each Punchcard process and PostgreSQL, one listening port per role (`api`,
`worker`), and counts on the wire, whatever the driver does:

- round trips: how often the client sends after the server has answered (a pipelined batch of
  statements is one; the connection's startup and authentication are not counted);
- statement executions by kind (an extended-protocol Execute, or each statement of a simple
  Query; a prepared statement's kind is remembered from its Parse);
- commits: transactions that wrote (an explicit COMMIT after a write, or a write in autocommit),
  beside read-only ones;
- the PostgreSQL backend processes serving the role (their pid comes in BackendKeyData), and the
  CPU time they used, read from /proc when the client says goodbye or when counts are written.

`kill -USR1` starts counting afresh (the bench sends it once its setup is done); SIGINT or
SIGTERM writes the counts as JSON to `--out` and exits. It answers 'N' to an SSL request, so
clients talk plain text to it. Run by bench/end_to_end.py; by hand:
`python bench/pgwire.py --upstream 127.0.0.1:5432 --listen api=6001 --out counts.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102
WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "WITH (writes)", "SELECT FOR UPDATE"})
TICK = os.sysconf("SC_CLK_TCK")
_COMMENTS = re.compile(r"^(\s|--[^\n]*\n|/\*.*?\*/|\()*", re.S)
_WRITE_WORD = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b")
_LOCKING = re.compile(r"\bFOR\s+(NO\s+KEY\s+)?(UPDATE|SHARE|KEY\s+SHARE)\b")


def kind_of(sql: str) -> str:
    """The statement's kind, by its first word (a WITH that writes, a SELECT that locks rows)."""
    text = _COMMENTS.sub("", sql, count=1)
    word = text.split(None, 1)[0].upper().rstrip(";") if text.strip() else ""
    upper = text.upper()
    if word == "WITH":
        return "WITH (writes)" if _WRITE_WORD.search(upper) else "SELECT"
    if word == "SELECT" and _LOCKING.search(upper):
        return "SELECT FOR UPDATE"
    if word in ("START", "BEGIN"):
        return "BEGIN"
    if word in ("END", "COMMIT"):
        return "COMMIT"
    if word in ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "ROLLBACK", "SAVEPOINT"):
        return word
    if word == "RELEASE":
        return "SAVEPOINT"
    return "other"


def cpu_seconds(pid: int) -> float | None:
    """A process's user and system CPU time so far (None once it is gone)."""
    try:
        after = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(after[11]) + int(after[12])) / TICK


@dataclass
class Role:
    """What one role's connections sent since counting (re)started."""

    connections: int = 0
    round_trips: int = 0
    commits: int = 0  # transactions that wrote and committed
    read_only_commits: int = 0
    rollbacks: int = 0
    statements: Counter[str] = field(default_factory=Counter)
    texts: Counter[str] = field(default_factory=Counter)
    baseline: dict[int, float] = field(default_factory=dict)  # backend pid: CPU at reset
    final: dict[int, float] = field(default_factory=dict)  # backend pid: CPU when last read

    def reset(self, live: set[int]) -> None:
        self.connections = self.round_trips = self.commits = 0
        self.read_only_commits = self.rollbacks = 0
        self.statements.clear()
        self.texts.clear()
        self.final.clear()
        self.baseline = {pid: cpu for pid in live if (cpu := cpu_seconds(pid)) is not None}

    def report(self, live: set[int]) -> dict[str, Any]:
        for pid in live:
            self.seen(pid)
        backend_cpu = sum(cpu - self.baseline.get(pid, 0.0) for pid, cpu in self.final.items())
        return {
            "connections_opened": self.connections,
            "backends": len(self.final),
            "round_trips": self.round_trips,
            "statements": sum(self.statements.values()),
            "statements_by_kind": dict(self.statements.most_common()),
            "commits": self.commits,
            "read_only_commits": self.read_only_commits,
            "rollbacks": self.rollbacks,
            "backend_cpu_s": round(backend_cpu, 3),
            "top_statements": [[n, t] for t, n in self.texts.most_common(40)],
        }

    def seen(self, pid: int) -> None:
        cpu = cpu_seconds(pid)
        if cpu is not None:
            self.final[pid] = cpu


class Connection:
    """One client connection's protocol state, parsed from a copy of its bytes."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.startup = True
        self.ready = False  # the first ReadyForQuery came: round trips count from here
        self.answered = False  # the server sent something since the client last did
        self.pid: int | None = None
        self.prepared: dict[str, str] = {}  # statement name: its text
        self.portals: dict[str, str] = {}  # portal name: its statement's text
        self.in_block = False
        self.wrote = False  # the open transaction (explicit or implicit) wrote
        self.client = bytearray()
        self.server = bytearray()

    def executed(self, sql: str) -> None:
        kind = kind_of(sql)
        self.role.statements[kind] += 1
        self.role.texts[" ".join(sql.split())[:160]] += 1
        if kind == "BEGIN":
            self.in_block, self.wrote = True, False
        elif kind == "COMMIT":
            self.closed(committed=True)
        elif kind == "ROLLBACK":
            self.closed(committed=False)
        elif kind in WRITES:
            self.wrote = True

    def closed(self, committed: bool) -> None:
        if not committed:
            self.role.rollbacks += 1
        elif self.wrote:
            self.role.commits += 1
        else:
            self.role.read_only_commits += 1
        self.in_block = self.wrote = False

    def synced(self) -> None:
        """End of an implicit transaction (Sync, or the end of a simple Query): a write
        outside BEGIN ... COMMIT committed by itself."""
        if not self.in_block and self.wrote:
            self.closed(committed=True)

    def from_client(self, data: bytes) -> bytes:
        """Parse what the client sent; returns what to answer it directly (an SSL refusal)."""
        if self.ready and self.answered:
            self.role.round_trips += 1
        self.answered = False
        self.client += data
        reply = b""
        while True:
            if self.startup:
                if len(self.client) < 8:
                    return reply
                length, code = struct.unpack("!II", self.client[:8])
                if len(self.client) < length:
                    return reply
                del self.client[:length]
                if code in (SSL_REQUEST, GSS_REQUEST):
                    reply += b"N"
                    continue
                self.startup = False
                continue
            if len(self.client) < 5:
                return reply
            tag = bytes(self.client[0:1])
            (length,) = struct.unpack("!I", self.client[1:5])
            if len(self.client) < 1 + length:
                return reply
            body = bytes(self.client[5 : 1 + length])
            del self.client[: 1 + length]
            self.message(tag, body)

    def message(self, tag: bytes, body: bytes) -> None:
        if tag == b"Q":
            for sql in body.rstrip(b"\0").decode(errors="replace").split(";"):
                if sql.strip():
                    self.executed(sql)
            self.synced()
        elif tag == b"P":
            name, rest = body.split(b"\0", 1)
            self.prepared[name.decode()] = rest.split(b"\0", 1)[0].decode(errors="replace")
        elif tag == b"B":
            portal, statement, _ = body.split(b"\0", 2)
            self.portals[portal.decode()] = self.prepared.get(statement.decode(), "")
        elif tag == b"E":
            self.executed(self.portals.get(body.split(b"\0", 1)[0].decode(), ""))
        elif tag == b"S":
            self.synced()
        elif tag == b"X" and self.pid is not None:
            self.role.seen(self.pid)

    def from_server(self, data: bytes) -> None:
        self.answered = True
        if self.ready:
            return  # only the startup's answers are parsed: they name the backend
        self.server += data
        while len(self.server) >= 5:
            tag = self.server[0:1]
            (length,) = struct.unpack("!I", self.server[1:5])
            if len(self.server) < 1 + length:
                return
            body = bytes(self.server[5 : 1 + length])
            del self.server[: 1 + length]
            if tag == b"K":
                self.pid = struct.unpack("!I", body[:4])[0]
            elif tag == b"Z":
                self.ready = True
                self.server.clear()
                return


class Proxy:
    def __init__(self, upstream: tuple[str, int], out: Path) -> None:
        self.upstream = upstream
        self.out = out
        self.roles: dict[str, Role] = {}
        self.live: dict[str, set[int]] = {}

    async def serve(self, name: str, port: int) -> asyncio.Server:
        self.roles[name] = Role()
        self.live[name] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.relay(name, reader, writer)

        return await asyncio.start_server(handle, "127.0.0.1", port)

    async def relay(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        role = self.roles[name]
        role.connections += 1
        conn = Connection(role)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                conn.from_server(data)
                if conn.pid is not None:
                    self.live[name].add(conn.pid)
                writer.write(data)
                await writer.drain()
            writer.close()

        down = asyncio.create_task(downstream())
        try:
            while data := await reader.read(65536):
                reply = conn.from_client(data)
                if reply:  # libpq sends an SSL request alone, and waits for the answer
                    writer.write(reply)
                    await writer.drain()
                    continue
                up_writer.write(data)
                await up_writer.drain()
        except ConnectionError:
            pass
        finally:
            if conn.pid is not None:
                role.seen(conn.pid)
                self.live[name].discard(conn.pid)
            up_writer.close()
            await asyncio.gather(down, return_exceptions=True)

    def reset(self) -> None:
        for name, role in self.roles.items():
            role.reset(self.live[name])

    def write(self) -> None:
        report = {name: role.report(self.live[name]) for name, role in self.roles.items()}
        self.out.write_text(json.dumps(report))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", default="127.0.0.1:5432")
    parser.add_argument("--listen", action="append", required=True, help="ROLE=PORT")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    proxy = Proxy((host, int(port)), args.out)
    for item in args.listen:
        name, listen_port = item.split("=")
        await proxy.serve(name, int(listen_port))
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.reset)
    loop.add_signal_handler(signal.SIGINT, done.set)
    loop.add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    proxy.write()


if __name__ == "__main__":
    asyncio.run(main())
