"""Running the API server and workers, and the demo tenant that `make run` starts with."""

from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn

from punchcard.api.app import create_app
from punchcard.services import tenants
from punchcard.services.clock import SystemClock
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import tenants as tenants_table
from punchcard.worker.delivery import Deliverer
from punchcard.worker.due_work import Worker

DEMO_PROGRAM = Path(__file__).parent / "demo" / "burrito-rewards.yaml"


class _NoQueryString(logging.Filter):
    """The access log shows paths without their query strings: a client may put anything there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def configure_logging(level: str) -> None:
    """Logs carry no personal data and no secrets, at every level (debug included)."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _NoQueryString) for f in access.filters):
        access.addFilter(_NoQueryString())
    # httpx logs each webhook request's full URL at info; receivers' URLs often embed a token.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def demo_tenant(engine: sa.Engine) -> dict[str, Any]:
    """The demo tenant (made on first run, the example program live in both environments),
    with fresh keys: stored keys are hashed, so each run makes new ones to show."""
    clock = SystemClock()
    now = clock.now()
    with engine.connect() as conn:
        tenant_id = conn.execute(
            sa.select(tenants_table.c.id).where(tenants_table.c.name == "demo")
        ).scalar()
    if tenant_id is None:
        made = tenants.create_tenant(engine, "demo", now)
        tenant_id = made["tenant"]
        for env in (made["live_environment"], made["sandbox_environment"]):
            Loyalty(engine, env).publish(DEMO_PROGRAM.read_text(), now)
    with engine.begin() as conn:
        sandbox = tenants.environment_of(conn, tenant_id, "sandbox")
        live = tenants.environment_of(conn, tenant_id, "live")
        return {
            "tenant": tenant_id,
            "sandbox_key": tenants.create_key(conn, sandbox, ["admin"], "make run", now),
            "live_key": tenants.create_key(conn, live, ["admin"], "make run", now),
        }


def listening(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything else starts, so that a port in use or an
    unknown host is refused at once (OSError) rather than after migrating and starting workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    engine: sa.Engine,
    sock: socket.socket,
    *,
    worker: bool,
    worker_interval_s: float,
    inquiries_per_minute: int,
    webhook_allow_private: bool,
    log_level: str,
) -> None:
    clock = SystemClock()
    app = create_app(
        engine,
        clock,
        inquiries_per_minute=inquiries_per_minute,
        webhook_allow_private=webhook_allow_private,
    )
    loops: list[Worker | Deliverer] = []
    if worker:
        loops = [
            Worker(engine, clock, worker_interval_s),
            Deliverer(engine, clock, allow_private=webhook_allow_private),
        ]
    threads = [
        threading.Thread(target=loop.run_forever, name=type(loop).__name__, daemon=True)
        for loop in loops
    ]
    for thread in threads:
        thread.start()
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level.lower()))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        for loop in loops:
            loop.stop()
        for thread in threads:
            thread.join(timeout=5)


def run_worker(
    engine: sa.Engine,
    interval_s: float,
    *,
    webhook_allow_private: bool,
    lease_s: float | None = None,
) -> None:
    """Due work and webhook delivery, each in its own loop, until the process is stopped.

    `lease_s` bounds how long a crashed worker's claims block others (defaults: 30 s for an
    environment's due work, 120 s for an endpoint's deliveries)."""
    clock = SystemClock()
    deliverer = Deliverer(engine, clock, allow_private=webhook_allow_private)
    worker = Worker(engine, clock, interval_s)
    if lease_s is not None:
        deliverer.lease = worker.lease = timedelta(seconds=lease_s)
    threading.Thread(target=deliverer.run_forever, name="Deliverer", daemon=True).start()
    worker.run_forever()
