"""A real `punchcard serve` process per database, and tenants made with the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .shapes import check_shape

PUNCHCARD = str(Path(sys.executable).parent / "punchcard")
# `serve` runs a process per CPU by default; the suite runs on as many cores (-n 2), so every
# server it starts (these fixtures, and tests that start `serve` themselves) runs one unless
# a test asks for more.
os.environ["PUNCHCARD_PROCESSES"] = "1"


@dataclass(frozen=True)
class Server:
    url: str
    database: str
    process: subprocess.Popen[bytes]
    a: dict[str, str]  # tenant A: tenant, sandbox_key, live_key
    b: dict[str, str]  # tenant B

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            event_hooks={"response": [check_shape]},
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str) -> str:
    done = subprocess.run(
        [PUNCHCARD, *args], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def upgrade(database: str) -> None:
    """`punchcard db upgrade`: `tenant create` and the other commands that write refuse a
    database not at the newest migration, and only `db upgrade` and `serve` migrate."""
    cli("db", "upgrade", "--database", database)


def start_server(
    database: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    process = subprocess.Popen(
        [
            PUNCHCARD,
            "serve",
            "--database",
            database,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--processes",
            "1",
            *extra,
        ],
        env={**os.environ, "PUNCHCARD_INQUIRIES_PER_MINUTE": "20", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return url, process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _server(database: str) -> Iterator[Server]:
    upgrade(database)
    a = json.loads(cli("tenant", "create", "Alpha Burritos", "--json", "--database", database))
    b = json.loads(cli("tenant", "create", "Beta Tacos", "--json", "--database", database))
    url, process = start_server(database)
    server = Server(url, database, process, a, b)
    program = (
        Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
    ).read_text()
    for tenant in (a, b):
        for key in (tenant["sandbox_key"], tenant["live_key"]):
            with server.client(key) as http:
                answer = http.post(
                    "/v1/programs/versions",
                    json={"source": program},
                    headers={"Idempotency-Key": "p1"},
                )
                assert answer.status_code == 201, answer.text
    yield server
    stop(process)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(f"sqlite:///{tmp_path_factory.mktemp('server')}/punchcard.sqlite3")


@pytest.fixture(scope="module")
def postgres_server(postgres_template: str) -> Iterator[Server]:
    import uuid

    import sqlalchemy as sa

    from ..conftest import POSTGRES_URL

    assert POSTGRES_URL is not None
    name = f"punchcard_e2e_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    url = sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    yield from _server(url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(request: pytest.FixtureRequest) -> Server:
    """Each test that takes this runs against a server on each database."""
    name = "sqlite_server" if request.param == "sqlite" else "postgres_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
