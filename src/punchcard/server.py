"""Running the API server and workers, and the demo tenant that `make run` starts with."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import sqlalchemy as sa
import uvicorn

from punchcard.api.app import create_app
from punchcard.services import caches, tenants
from punchcard.services.clock import SystemClock
from punchcard.services.loyalty import Loyalty
from punchcard.store.database import create_engine
from punchcard.store.tables import tenants as tenants_table
from punchcard.worker.delivery import Deliverer
from punchcard.worker.due_work import Worker

DEMO_PROGRAM = Path(__file__).parent / "demo" / "burrito-rewards.yaml"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_WAIT_S = 10.0  # how long stopping API processes may finish their requests before SIGKILL

logger = logging.getLogger(__name__)


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
    stop_loops = _start_loops(engine, clock, worker, worker_interval_s, webhook_allow_private)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level.lower()))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        stop_loops()


def _start_loops(
    engine: sa.Engine,
    clock: SystemClock,
    worker: bool,
    worker_interval_s: float,
    allow_private: bool,
) -> Callable[[], None]:
    """Start the worker's due-work and delivery loops, each on a daemon thread of this
    process, with the process caches on for them (none with `worker` off); returns what
    stops them and waits for their threads."""
    loops: list[Worker | Deliverer] = []
    if worker:
        caches.start(engine)
        loops = [
            Worker(engine, clock, worker_interval_s),
            Deliverer(engine, clock, allow_private=allow_private),
        ]
    threads = [
        threading.Thread(target=loop.run_forever, name=type(loop).__name__, daemon=True)
        for loop in loops
    ]
    for thread in threads:
        thread.start()

    def stop() -> None:
        for loop in loops:
            loop.stop()
        for thread in threads:
            thread.join(timeout=5)
        if worker:
            caches.stop(engine)

    return stop


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, as a container may limit it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def serve_processes(
    engine: sa.Engine,
    sock: socket.socket,
    processes: int,
    *,
    worker: bool,
    worker_interval_s: float,
    inquiries_per_minute: int,
    webhook_allow_private: bool,
    log_level: str,
) -> int:
    """`processes` API processes accepting on one socket, each with its own pool, and the
    worker threads here in the parent. Returns the exit code: 0 after SIGTERM or SIGINT,
    1 when an API process ended by itself (the others are stopped: a supervisor restarts
    the whole server, as forking again from a parent running threads is not safe).
    One process is `serve`: the API and the worker threads in this process, no fork."""
    if processes == 1:
        serve(
            engine,
            sock,
            worker=worker,
            worker_interval_s=worker_interval_s,
            inquiries_per_minute=inquiries_per_minute,
            webhook_allow_private=webhook_allow_private,
            log_level=log_level,
        )
        return 0
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()  # a child must not inherit a pooled connection the parent also uses
    sys.stdout.flush()  # nor a buffered line (the demo's banner) that it would print again
    sys.stderr.flush()
    parent = os.getpid()
    children: set[int] = set()
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            _api_process(
                url,
                sock,
                parent,
                inquiries_per_minute=inquiries_per_minute,
                webhook_allow_private=webhook_allow_private,
                log_level=log_level,
            )
        children.add(pid)
    sock.close()  # the children hold it: the port is free once they are gone
    stopping = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    clock = SystemClock()
    # threads only after forking: a fork copies no thread, only its locks
    stop_loops = _start_loops(engine, clock, worker, worker_interval_s, webhook_allow_private)
    code = 0
    while not stopping.wait(0.2):
        if ended := _reap(children):
            logger.error("API process %d ended by itself: stopping the server", ended[0])
            code = 1
            break
    _stop_children(children)
    stop_loops()
    engine.dispose()
    return code


def _reap(children: set[int]) -> list[int]:
    """The children that have ended (and are removed from `children`), without waiting."""
    ended = [pid for pid in children if os.waitpid(pid, os.WNOHANG)[0] == pid]
    children.difference_update(ended)
    return ended


def _stop_children(children: set[int]) -> None:
    """SIGTERM to each child (uvicorn finishes its requests), then SIGKILL to any still there."""
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while children and time.monotonic() < deadline:
        _reap(children)
        time.sleep(0.05)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    children.clear()


def _die_with_parent(parent: int) -> None:
    """On Linux the kernel sends this process SIGKILL when its parent dies, so a server
    killed with SIGKILL leaves no child holding its port. Elsewhere a supervisor must."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0 and os.getppid() != parent:
        os._exit(1)  # the parent died before the request took effect


def _api_process(
    url: str,
    sock: socket.socket,
    parent: int,
    *,
    inquiries_per_minute: int,
    webhook_allow_private: bool,
    log_level: str,
) -> NoReturn:
    """One API process (a forked child): its own engine and pool, made after the fork."""
    code = 1
    try:
        _die_with_parent(parent)
        logger.debug("API process %d started", os.getpid())
        engine = create_engine(url)
        app = create_app(
            engine,
            SystemClock(),
            inquiries_per_minute=inquiries_per_minute,
            webhook_allow_private=webhook_allow_private,
        )
        try:
            uvicorn.Server(uvicorn.Config(app, log_level=log_level.lower())).run(sockets=[sock])
            code = 0
        except KeyboardInterrupt:  # uvicorn raises the SIGINT it stopped on once it is done
            code = 0
        finally:
            engine.dispose()
    except BaseException:
        logger.exception("API process %d failed", os.getpid())
    finally:
        logging.shutdown()
        os._exit(code)  # never return into the parent's code (the CLI, atexit handlers)


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
    caches.start(engine)
    try:
        threading.Thread(target=deliverer.run_forever, name="Deliverer", daemon=True).start()
        worker.run_forever()
    finally:
        caches.stop(engine)
