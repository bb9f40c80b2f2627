"""The parts of a crash test: a PostgreSQL of the test's own (so it can be restarted without
touching anyone else's), processes that can be SIGKILLed and started again, and a client
that retries every request with its Idempotency-Key until it gets an answer."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import PUNCHCARD, free_port


def postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl, if this machine has a PostgreSQL server installed."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PrivateCluster:
    """A throwaway PostgreSQL cluster on a free port, run as the `postgres` user when we are root
    (initdb refuses root). Trust auth on loopback; fsync on, like production."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="punchcard-crash-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def crash_and_restart(self) -> None:
        """Stop as a crash would (no checkpoint: recovery replays the WAL), then start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        self.start()

    def remove(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Supervised:
    """A process that can be killed at any moment and started again with the same command."""

    name: str
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [PUNCHCARD, *self.args],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextmanager
def chaos(
    processes: list[Supervised],
    seed: int,
    pause_s: tuple[float, float] = (0.5, 3.0),
    midway: Any = None,
) -> Iterator[dict[str, int]]:
    """While the block runs: every 0.5 to 3 s SIGKILL a random process and start it again; call
    `midway()` once (a database restart) after the first few kills."""
    rng = random.Random(seed)
    done = threading.Event()
    counts = {"kills": 0, "midway": 0}

    def loop() -> None:
        while not done.wait(rng.uniform(*pause_s)):
            victim = rng.choice(processes)
            victim.kill()
            victim.start()
            counts["kills"] += 1
            if counts["kills"] == 5 and midway is not None:
                midway()
                counts["midway"] += 1

    thread = threading.Thread(target=loop, name="chaos", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        done.set()
        thread.join()


@dataclass
class Retrying:
    """An HTTP client that sends each request with its Idempotency-Key until it has an answer
    that is not the fault of a crash: transport errors, 5xx and 409 in-flight are retried,
    spreading over the given servers. Records every definite answer."""

    urls: list[str]
    key: str
    answers: list[tuple[str, int, str]] = field(default_factory=list)
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(
        self, http: httpx.Client, method: str, path: str, idem: str, body: Any
    ) -> httpx.Response:
        turn = hash(idem)
        deadline = time.monotonic() + 180
        while True:
            url = self.urls[turn % len(self.urls)]
            turn += 1
            try:
                answer = http.request(
                    method,
                    url + path,
                    json=body,
                    headers={"Authorization": f"Bearer {self.key}", "Idempotency-Key": idem},
                    timeout=10,
                )
                retry = answer.status_code >= 500 or (
                    answer.status_code == 409
                    and answer.json().get("code") == "idempotency_key_in_flight"
                )
            except httpx.TransportError:
                retry = True
            if not retry:
                with self.lock:
                    self.answers.append((idem, answer.status_code, answer.text[:300]))
                return answer
            with self.lock:
                self.retries += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path} got no answer in 180 s")
            time.sleep(0.2)


def wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")
