"""Security, through a real `punchcard serve` process (issue 5, item 8).

One server (SQLite, `--log-level debug`, everything it prints captured in a file) serves the
module. It proves:

- every route, called with a key of each scope, succeeds in the key's own environment when the
  scope allows it and answers `403 forbidden` when not; the same call naming another tenant's or
  another environment's resource answers `404 not_found` (or, for a key without the scope, the
  same 403 an id that exists nowhere gets), and changes no row of that environment;
- no API key, no secret part of one and no PIN is stored in the database (SQLite and
  PostgreSQL, every column of every table, and the SQLite files' raw bytes); signing secrets
  are stored where they sign and nowhere else;
- wrong PINs lock a card (per card, across a restart), and an unknown card, a wrong PIN and a
  locked card are answered byte for byte alike; inquiries are rate limited with a problem body;
- live webhooks never point at loopback, private or metadata addresses, however written;
- the server's logs, at debug, hold no email, phone, card number, PIN, key or secret.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa

from punchcard.services import cards, webhooks
from punchcard.services.inbound import signature
from punchcard.services.tenants import SCOPES
from punchcard.store import tables

from .conftest import PUNCHCARD, cli, free_port, stop, upgrade
from .shapes import check_shape

PROGRAM = (
    Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
).read_text()
BURRITO = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 2, "unit_price": "9.50"}
BIG = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 20, "unit_price": "10.00"}
INQUIRIES_PER_MINUTE = 20


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


@dataclass
class Srv:
    """The module's server; restartable (the PIN lockout must survive a restart)."""

    database: str
    log: Path
    a: dict[str, str]
    b: dict[str, str]
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    # what must never be printed: (what it is, the value)
    secrets: list[tuple[str, str]] = field(default_factory=list)
    _http: httpx.Client | None = None

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=30,
            event_hooks={"response": [check_shape]},
        )

    def http(self) -> httpx.Client:
        """A keep-alive client without a key (each call brings its own), shared by threads."""
        if self._http is None or str(self._http.base_url).rstrip("/") != self.url:
            self._http = httpx.Client(base_url=self.url, timeout=30)
        return self._http

    def remember(self, kind: str, value: str) -> str:
        self.secrets.append((kind, value))
        return value

    def start(self) -> None:
        port = free_port()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    PUNCHCARD,
                    "serve",
                    "--database",
                    self.database,
                    "--port",
                    str(port),
                    "--log-level",
                    "debug",
                ],
                env={
                    **_environ(),
                    "PUNCHCARD_INQUIRIES_PER_MINUTE": str(INQUIRIES_PER_MINUTE),
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process is not None:
            stop(self.process)


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PUNCHCARD_WEBHOOK")}


def _tenant(database: str, name: str) -> dict[str, str]:
    upgrade(database)
    return dict(json.loads(cli("tenant", "create", name, "--json", "--database", database)))


def _post(http: httpx.Client, path: str, body: Any, status: int = 201) -> Any:
    answer = http.post(path, json=body, headers=_key())
    assert answer.status_code == status, f"{path}: {answer.status_code} {answer.text}"
    return answer.json()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    base = tmp_path_factory.mktemp("security")
    database = f"sqlite:///{base}/punchcard.sqlite3"
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda n: _tenant(database, n), ["Alpha Burritos", "Beta Tacos"])
    server = Srv(database, base / "server.log", a, b)
    for tenant in (a, b):
        server.remember("api key", tenant["sandbox_key"])
        server.remember("api key", tenant["live_key"])
    server.start()
    for tenant in (a, b):
        for key in (tenant["sandbox_key"], tenant["live_key"]):
            with server.client(key) as http:
                _post(http, "/v1/programs/versions", {"source": PROGRAM})
    yield server
    server.stop()


def _sandbox(srv: Srv, key: str) -> tuple[str, str]:
    """A fresh named sandbox: (id, its admin key)."""
    with srv.client(key) as http:
        made = _post(
            http,
            "/v1/sandboxes",
            {"name": f"s-{uuid.uuid4().hex[:6]}", "start": "2026-03-03T12:00:00-06:00"},
        )
    return made["id"], srv.remember("api key", made["key"])


# The route table ------------------------------------------------------------------------

# scope: the one a call needs; None: any key; "public": no key; "signed": the source's signature.
PUBLIC, SIGNED = "public", "signed"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as in /openapi.json; {placeholders} are filled from the environment's ids
    scope: str | None
    ok: int  # the status of a call the scope allows, in the key's own environment
    body: Any = None
    fresh: str | None = None  # a thing each allowed call uses up: made anew for it
    foreign: bool = True  # names a resource, so another environment's id can be tried
    code: str | None = None  # the problem code of an allowed call, when `ok` is an error


ROUTES = [
    Route("GET", "/healthz", PUBLIC, 200, foreign=False),
    Route("GET", "/readyz", PUBLIC, 200, foreign=False),
    Route(
        "POST",
        "/v1/members",
        "members:write",
        201,
        {"id": "m-{new}", "email": "{new}@example.com"},
        foreign=False,
    ),
    Route("GET", "/v1/members/{member_id}", "members:read", 200),
    Route("GET", "/v1/members/{member_id}/balance", "members:read", 200),
    Route("GET", "/v1/members/{member_id}/timeline", "members:read", 200),
    Route("GET", "/v1/members/{member_id}/rewards", "members:read", 200),
    Route("POST", "/v1/members/{member_id}/rewards", "rewards:write", 201, {"reward": "five-off"}),
    Route(
        "POST",
        "/v1/members/{member_id}/points/transfers",
        "members:write",
        201,
        {"to": "{member2}", "points": 10},
    ),
    Route("GET", "/v1/balances?member={member_id}", "members:read", 200),
    Route("GET", "/v1/rewards", "members:read", 200, foreign=False),
    Route(
        "POST",
        "/v1/orders/quote",
        "orders:read",
        200,
        {"id": "o-{new}", "member": "{member_id}", "lines": [BURRITO]},
    ),
    Route(
        "POST",
        "/v1/orders",
        "orders:write",
        201,
        {"id": "o-{new}", "member": "{member_id}", "lines": [BURRITO]},
    ),
    Route("GET", "/v1/orders/{order_id}", "orders:read", 200),
    Route("PATCH", "/v1/orders/{order_id}", "orders:write", 200, {"tax": "1.00"}),
    Route("POST", "/v1/orders/{order_id}/close", "orders:write", 200, fresh="open order"),
    Route(
        "POST",
        "/v1/orders/{order_id}/refunds",
        "orders:write",
        201,
        {"all": True},
        fresh="closed order",
    ),
    Route("POST", "/v1/orders/{order_id}/void", "orders:write", 200, fresh="open order"),
    Route(
        "POST",
        "/v1/gift-cards",
        "gift_cards:write",
        201,
        {"id": "g-{new}", "amount": "5.00"},
        foreign=False,
    ),
    Route(
        "POST",
        "/v1/gift-cards/inquiries",
        "gift_cards:read",
        200,
        {"number": "{card_number}", "pin": "{pin}"},
    ),
    Route("GET", "/v1/gift-cards/{card_id}", "gift_cards:read", 200),
    Route("POST", "/v1/gift-cards/{card_id}/reload", "gift_cards:write", 200, {"amount": "1.00"}),
    Route("POST", "/v1/gift-cards/{card_id}/redeem", "gift_cards:write", 200, {"amount": "1.00"}),
    Route(
        "POST",
        "/v1/gift-cards/{card_id}/transfers",
        "gift_cards:write",
        201,
        {"to": "{card2}", "amount": "1.00"},
    ),
    Route("POST", "/v1/gift-cards/{card_id}/holds", "gift_cards:write", 201, {"amount": "1.00"}),
    Route("POST", "/v1/gift-cards/holds/{hold_id}/capture", "gift_cards:write", 200, {}, "hold"),
    Route("POST", "/v1/gift-cards/holds/{hold_id}/void", "gift_cards:write", 200, fresh="hold"),
    Route(
        "POST",
        "/v1/programs/versions",
        "programs:write",
        201,
        {"source": PROGRAM},
        foreign=False,
    ),
    Route("GET", "/v1/programs/versions", "programs:read", 200, foreign=False),
    Route(
        "POST",
        "/v1/programs/versions/{number}/activate",
        "programs:write",
        200,
        {},
        fresh="version",
        foreign=False,  # version numbers name the caller's own versions
    ),
    Route("GET", "/v1/programs/diagrams/{name}", "programs:read", 200, foreign=False),
    Route(
        "POST",
        "/v1/sandboxes",
        "sandboxes:write",
        201,
        {"name": "s-{new}", "start": "2026-01-01T00:00:00Z"},
        foreign=False,
    ),
    Route("DELETE", "/v1/sandboxes/{sandbox_id}", "sandboxes:write", 204, fresh="sandbox"),
    Route("POST", "/v1/sandboxes/{sandbox_id}/clock", "sandboxes:write", 200, {"advance": "PT1M"}),
    # The keys' own environment is the tenant's sandbox, which runs on the wall clock.
    Route(
        "POST",
        "/v1/clock",
        "sandboxes:write",
        409,
        {"advance": "PT1S"},
        foreign=False,
        code="invalid_state",
    ),
    Route("GET", "/v1/clock", None, 200, foreign=False),
    Route("GET", "/v1/consistency", None, 200, foreign=False),
    Route("GET", "/v1/webhooks/endpoints", "webhooks:read", 200, foreign=False),
    Route(
        "POST",
        "/v1/webhooks/endpoints",
        "webhooks:write",
        201,
        {"url": "http://127.0.0.1:9/new", "event_types": ["tier.changed"]},
        foreign=False,
    ),
    Route("GET", "/v1/webhooks/endpoints/{endpoint_id}", "webhooks:read", 200),
    Route(
        "PATCH",
        "/v1/webhooks/endpoints/{endpoint_id}",
        "webhooks:write",
        200,
        {"enabled": False},
        fresh="endpoint",
    ),
    Route(
        "DELETE", "/v1/webhooks/endpoints/{endpoint_id}", "webhooks:write", 204, fresh="endpoint"
    ),
    Route("POST", "/v1/webhooks/endpoints/{endpoint_id}/rotate-secret", "webhooks:write", 200),
    Route("GET", "/v1/webhooks/endpoints/{endpoint_id}/attempts", "webhooks:read", 200),
    Route("GET", "/v1/webhooks/endpoints/{endpoint_id}/dead-letters", "webhooks:read", 200),
    Route(
        "POST",
        "/v1/webhooks/endpoints/{endpoint_id}/recover",
        "webhooks:write",
        200,
        {"since": "2026-01-01T00:00:00Z"},
    ),
    Route("POST", "/v1/webhooks/messages/{message_id}/resend", "webhooks:write", 200),
    Route(
        "POST", "/v1/inbound/sources", "inbound:write", 201, {"mapping": "generic"}, foreign=False
    ),
    Route("GET", "/v1/inbound/sources/{source_id}/events", "inbound:write", 200),
    # No key: the source's signature authenticates (test_the_signed_inbound_route_...).
    Route("POST", "/v1/inbound/{source_id}", SIGNED, 202, foreign=False),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: ids.get(m[1], m[0]), value)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@dataclass
class World:
    own: dict[str, str]  # tenant A's sandbox: where the scoped keys live
    foreign: dict[str, dict[str, str]]  # A's live and B's sandbox: what they must never reach
    keys: dict[str, str]  # scope -> a key of A's sandbox with only that scope
    admin: str  # A's sandbox admin key: makes fresh things for allowed calls


def _wait(check: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def _things(srv: Srv, key: str, *, live: bool, sandbox: bool) -> dict[str, str]:
    """One of everything in a key's environment, and the ids that name them."""
    new = uuid.uuid4().hex[:8]
    ids = {"member_id": f"m-{new}", "member2": f"m2-{new}", "order_id": f"o-{new}"}
    with srv.client(key) as http:
        email = srv.remember("email", f"ann.{new}@example.com")
        phone = srv.remember("phone", f"+1555{int(new, 16) % 10**7:07d}")
        _post(http, "/v1/members", {"id": ids["member_id"], "email": email, "phone": phone})
        _post(http, "/v1/members", {"id": ids["member2"]})
        placed = _post(
            http, "/v1/orders", {"id": f"big-{new}", "member": ids["member_id"], "lines": [BIG]}
        )
        balance = http.get(
            f"/v1/members/{ids['member_id']}/balance",
            params={"consistency_token": placed["consistency_token"], "wait_ms": 5000},
        ).json()
        assert balance["posted"] >= 1000, balance  # enough for two five-off rewards
        _post(
            http,
            "/v1/orders",
            {
                "id": ids["order_id"],
                "member": ids["member_id"],
                "lines": [BURRITO],
                "status": "open",
            },
        )
        card = _post(http, "/v1/gift-cards", {"id": f"g-{new}", "amount": "100.00"})
        _post(http, "/v1/gift-cards", {"id": f"g2-{new}", "amount": "1.00"})
        ids.update(card_id=f"g-{new}", card2=f"g2-{new}", card_number=card["number"])
        ids["pin"] = card["pin"]
        srv.remember("card number", card["number"])
        srv.remember("pin", card["pin"])
        ids["hold_id"] = _post(
            http, f"/v1/gift-cards/{ids['card_id']}/holds", {"amount": "1.00", "id": f"h-{new}"}
        )["hold"]["id"]
        url = "http://93.184.216.34/hooks" if live else "http://127.0.0.1:9/hooks"
        endpoint = _post(
            http, "/v1/webhooks/endpoints", {"url": url, "event_types": ["tier.changed"]}
        )
        ids["endpoint_id"] = endpoint["id"]
        srv.remember("webhook secret", endpoint["secret"])
        source = _post(http, "/v1/inbound/sources", {"mapping": "generic"})
        ids["source_id"] = source["id"]
        srv.remember("inbound secret", source["secret"])
        ids["env_id"] = _env_of(srv, ids["endpoint_id"])
    if sandbox:
        ids["sandbox_id"], _ = _sandbox(srv, key)
    _quiet(srv, [ids["env_id"]])
    engine = sa.create_engine(srv.database)
    with engine.connect() as conn:  # a real message of the environment: its first event's
        first = conn.execute(
            sa.select(sa.func.min(tables.outbox.c.id)).where(
                tables.outbox.c.env_id == ids["env_id"]
            )
        ).scalar_one()
        ids["message_id"] = webhooks.message_id(first)
    engine.dispose()
    return ids


def _quiet(srv: Srv, env_ids: list[str]) -> None:
    """Wait until the worker has sent every event of these environments: each enabled
    endpoint's cursor is past them (a failure made its rows in the same transaction)."""
    engine = sa.create_engine(srv.database)
    outbox, endpoints = tables.outbox, tables.webhook_endpoints

    def done() -> bool:
        with engine.connect() as conn:
            return not conn.execute(
                sa.select(sa.func.count())
                .select_from(outbox)
                .join(endpoints, endpoints.c.env_id == outbox.c.env_id)
                .where(
                    outbox.c.env_id.in_(env_ids),
                    endpoints.c.state == "enabled",
                    endpoints.c.deleted_at.is_(None),
                    sa.tuple_(outbox.c.tx, outbox.c.id)
                    > sa.tuple_(endpoints.c.cursor_tx, endpoints.c.cursor_id),
                )
            ).scalar()

    _wait(done)
    engine.dispose()


def _env_of(srv: Srv, endpoint_id: str) -> str:
    engine = sa.create_engine(srv.database)
    with engine.connect() as conn:
        env = conn.execute(
            sa.select(tables.webhook_endpoints.c.env_id).where(
                tables.webhook_endpoints.c.id == endpoint_id
            )
        ).scalar_one()
    engine.dispose()
    return str(env)


def _keys(srv: Srv, scopes: tuple[str, ...], environment: str = "sandbox") -> dict[str, str]:
    """One key per scope in tenant A's environment, each made by `punchcard key create` (run
    in one process: the command, not a shortcut, but one interpreter start instead of 14)."""
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from punchcard.cli import app\n"
        "tenant, env, database, *scopes = sys.argv[1:]\n"
        "for scope in scopes:\n"
        "    done = CliRunner().invoke(app, ['key', 'create', '--tenant', tenant,\n"
        "        '--environment', env, '--scope', scope, '--database', database])\n"
        "    assert done.exit_code == 0, done.output\n"
        "    print(done.output.strip())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, srv.a["tenant"], environment, srv.database, *scopes],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return dict(zip(scopes, done.stdout.split(), strict=True))


@pytest.fixture(scope="module")
def world(srv: Srv) -> World:
    with ThreadPoolExecutor(3) as pool:
        made = pool.submit(_keys, srv, SCOPES)
        own = pool.submit(_things, srv, srv.a["sandbox_key"], live=False, sandbox=True)
        a_live = pool.submit(_things, srv, srv.a["live_key"], live=True, sandbox=False)
        b_sandbox = pool.submit(_things, srv, srv.b["sandbox_key"], live=False, sandbox=True)
        keys = made.result()
        world = World(
            own.result(), {"A live": a_live.result(), "B sandbox": b_sandbox.result()}, keys,
            srv.a["sandbox_key"],
        )  # fmt: skip
    for key in keys.values():
        srv.remember("api key", key)
    return world


def _fresh(srv: Srv, world: World, what: str | None) -> dict[str, str]:
    """A new thing for a call that uses one up, made with the environment's admin key."""
    if what is None:
        return {}
    new = uuid.uuid4().hex[:8]
    member = world.own["member_id"]
    with srv.client(world.admin) as http:
        if what in ("open order", "closed order"):
            status = "open" if what == "open order" else "closed"
            order = {"id": f"o-{new}", "member": member, "lines": [BURRITO], "status": status}
            return {"order_id": _post(http, "/v1/orders", order)["id"]}
        if what == "hold":
            path = f"/v1/gift-cards/{world.own['card_id']}/holds"
            return {
                "hold_id": _post(http, path, {"amount": "1.00", "id": f"h-{new}"})["hold"]["id"]
            }
        if what == "endpoint":
            body = {"url": "http://127.0.0.1:9/x", "event_types": ["tier.changed"]}
            made = _post(http, "/v1/webhooks/endpoints", body)
            srv.remember("webhook secret", made["secret"])
            return {"endpoint_id": made["id"]}
        if what == "sandbox":
            return {"sandbox_id": _sandbox(srv, world.admin)[0]}
        if what == "version":
            body = {"source": PROGRAM, "activate": False}
            versions = _post(http, "/v1/programs/versions", body)["versions"]
            return {"number": str(max(v["version"] for v in versions))}
    raise AssertionError(what)


def _call(srv: Srv, key: str | None, route: Route, ids: dict[str, str]) -> httpx.Response:
    ids = {"new": uuid.uuid4().hex[:10], "number": "1", "name": "order", **ids}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return srv.http().request(
        route.method,
        _fill(route.path, ids),
        json=_fill(route.body, ids),
        headers=headers,
    )


def _snapshot(srv: Srv, env_ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that belongs to these environments, as text (worker lease columns aside)."""
    volatile = {"locked_until", "lease_owner", "lease_until", "checked_at", "processed_through"}
    engine = sa.create_engine(srv.database)
    seen: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            column = table.c.get("env_id") if table.name != "environments" else table.c.id
            if column is None:
                continue
            columns = [c for c in table.c if c.name not in volatile]
            rows = conn.execute(sa.select(*columns).where(column.in_(env_ids))).all()
            seen[table.name] = sorted(tuple(str(v) for v in row) for row in rows)
    engine.dispose()
    return seen


@pytest.mark.parametrize("scope", SCOPES)
def test_each_scope_reaches_what_it_allows_and_nothing_of_another_environment(
    srv: Srv, world: World, scope: str
) -> None:
    key = world.keys[scope]
    foreign_envs = [ids["env_id"] for ids in world.foreign.values()]
    foreign_envs.append(world.foreign["B sandbox"]["sandbox_id"])
    _quiet(srv, foreign_envs)
    before = _snapshot(srv, foreign_envs)

    def check(route: Route) -> list[str]:
        wrong = []
        allowed = route.scope is None or scope in ("admin", route.scope)
        ids = {**world.own, **(_fresh(srv, world, route.fresh) if allowed else {})}
        answer = _call(srv, key, route, ids)
        want = (route.ok, route.code) if allowed else (403, "forbidden")
        got_code = answer.json().get("code") if answer.status_code >= 400 else None
        if (answer.status_code, got_code) != want:
            wrong.append(f"own {route.method} {route.path}: {answer.status_code} {answer.text}")
        if not route.foreign:
            return wrong
        nowhere = None
        if not allowed:
            nowhere = _call(srv, key, route, {k: f"{v}-nowhere" for k, v in world.own.items()})
        for name, their in world.foreign.items():
            if route.path.startswith("/v1/sandboxes/") and name == "A live":
                continue  # a tenant's keys manage its own sandboxes: that is what they are for
            answer = _call(srv, key, route, their)
            if nowhere is None:
                ok = (answer.status_code, answer.json().get("code")) == (404, "not_found")
            else:  # refused for the scope, exactly as an id that exists nowhere is
                ok = answer.status_code == 403 and answer.content == nowhere.content
            if not ok:
                wrong.append(
                    f"{name} {route.method} {route.path}: {answer.status_code} {answer.text}"
                )
        return wrong

    with ThreadPoolExecutor(6) as pool:
        keyed = [r for r in ROUTES if r.scope not in (PUBLIC, SIGNED)]
        wrong = [line for lines in pool.map(check, keyed) for line in lines]
    assert wrong == []
    assert _snapshot(srv, foreign_envs) == before


def test_every_route_of_the_app_is_in_the_table(srv: Srv) -> None:
    spec = httpx.get(f"{srv.url}/openapi.json").json()
    served = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    listed = {(r.method, r.path.split("?")[0]) for r in ROUTES}
    assert served == listed


def test_public_routes_need_no_key_and_every_other_route_needs_one(srv: Srv) -> None:
    for route in ROUTES:
        answer = _call(srv, None, route, {"source_id": "src_x", "member_id": "m", "order_id": "o"})
        if route.scope == PUBLIC:
            assert answer.status_code == 200, route
        elif route.scope == SIGNED:
            assert (answer.status_code, answer.json()["code"]) == (401, "bad_signature")
        else:
            assert (answer.status_code, answer.json()["code"]) == (401, "unauthenticated"), route
            assert answer.headers["www-authenticate"] == "Bearer"


def test_a_key_with_a_wrong_secret_part_is_refused_like_an_unknown_key(srv: Srv) -> None:
    real = srv.a["sandbox_key"]
    forged = real[: real.rindex("_") + 1] + "x" * 43  # a real key id, another secret
    with srv.client(forged) as http:
        refused = http.get("/v1/clock")
    with srv.client("pc_sand_000000000000_" + "y" * 43) as http:
        unknown = http.get("/v1/clock")
    assert (refused.status_code, refused.json()["code"]) == (401, "unauthenticated")
    assert refused.content == unknown.content


def test_the_signed_inbound_route_ignores_keys_and_names_no_source(srv: Srv) -> None:
    """Another environment's source, an unknown source and a wrong signature answer alike;
    so do a stale timestamp on a real source and on an unknown one."""
    with srv.client(srv.a["live_key"]) as http:
        mine = _post(http, "/v1/inbound/sources", {"mapping": "generic"})
    with srv.client(srv.b["sandbox_key"]) as http:
        theirs = _post(http, "/v1/inbound/sources", {"mapping": "generic"})
    srv.remember("inbound secret", mine["secret"])
    srv.remember("inbound secret", theirs["secret"])
    body = json.dumps({"id": "evt_x", "type": "order.voided", "order": {"id": "o1"}}).encode()
    stamp = str(int(time.time()))

    def send(
        source: str, secret: str, key: str | None = None, at: str = stamp, content: bytes = body
    ) -> httpx.Response:
        headers = {
            "x-punchcard-timestamp": at,
            "x-punchcard-signature": signature(secret, at, content),
            "content-type": "application/json",
        }
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.post(f"{srv.url}/v1/inbound/{source}", content=content, headers=headers)

    with_their_secret = send(mine["id"], theirs["secret"], key=srv.b["sandbox_key"])
    unknown = send("src_" + "0" * 20, mine["secret"])
    admin_key_no_signature = httpx.post(
        f"{srv.url}/v1/inbound/{mine['id']}",
        content=body,
        headers={"Authorization": f"Bearer {srv.a['live_key']}"},
    )
    for answer in (with_their_secret, unknown):
        assert (answer.status_code, answer.json()["code"]) == (401, "bad_signature")
        assert answer.content == with_their_secret.content
    assert (admin_key_no_signature.status_code, admin_key_no_signature.json()["code"]) == (
        401,
        "bad_signature",
    )
    huge = send("src_" + "0" * 20, mine["secret"], at="1" + "0" * 400)  # no 500, however long
    assert (huge.status_code, huge.json()["code"]) == (401, "bad_signature")
    twice = b'{"id": "evt_t", "id": "evt_u", "type": "order.voided", "order": {"id": "o1"}}'
    signed_twice = send(mine["id"], mine["secret"], content=twice)
    assert signed_twice.json()["detail"] == "body: the key 'id' is given twice"
    unsigned_twice = httpx.post(
        f"{srv.url}/v1/inbound/{mine['id']}",
        content=twice,
        headers={"content-type": "application/json"},
    )
    assert unsigned_twice.content == admin_key_no_signature.content  # the signature first
    stale = str(int(time.time()) - 600)  # outside the 5-minute tolerance
    stale_known = send(mine["id"], mine["secret"], at=stale)
    stale_unknown = send("src_" + "0" * 20, mine["secret"], at=stale)
    assert (stale_known.status_code, stale_known.json()["code"]) == (401, "bad_signature")
    assert stale_known.content == stale_unknown.content
    assert send(mine["id"], mine["secret"]).status_code == 202


def test_scopes_are_checked_before_anything_else(srv: Srv) -> None:
    """A key without the scope is refused alike in live (no 409 for the clock) and is never
    rate limited instead (the limiter would otherwise tell it the route exists for it)."""
    narrow = _keys(srv, ("members:read",), "live")["members:read"]
    srv.remember("api key", narrow)
    with srv.client(narrow) as http:
        clock = http.post("/v1/clock", json={"advance": "PT1H"}, headers=_key())
        sandbox = http.post(
            "/v1/sandboxes", json={"name": "live", "start": "2026-01-01T00:00:00Z"}, headers=_key()
        )
        inquiries = [
            http.post(
                "/v1/gift-cards/inquiries",
                json={"number": "6000000000000000", "pin": "0000"},
                headers=_key(),
            )
            for _ in range(INQUIRIES_PER_MINUTE + 2)
        ]
    for answer in (clock, sandbox, *inquiries):
        assert (answer.status_code, answer.json()["code"]) == (403, "forbidden")


# What a request gets wrong, sent by a key that may not make it at all.
MALFORMED: dict[str, dict[str, Any]] = {
    "unparseable JSON": {"content": b'{"id": ', "headers": {"content-type": "application/json"}},
    "a body of the wrong shape": {"json": {"nonsense": [1]}},
    "a key given twice": {
        "content": b'{"id": "a", "id": "b"}',
        "headers": {"content-type": "application/json"},
    },
    "a body that is not JSON": {
        "content": b"id=1",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    },
    "an unknown query parameter": {"query": "limt=10"},
}


def test_a_key_without_the_scope_learns_nothing_from_what_its_request_got_wrong(
    srv: Srv, world: World
) -> None:
    """The key and its scope are checked before the query is read and before the body is
    parsed: a key without the scope gets, for a malformed request, the very 403 a good one
    gets, and a request without a key gets 401, not a 422 that tells it what to fix."""
    wrong = []
    for route in ROUTES:
        if route.scope in (PUBLIC, SIGNED, None):
            continue
        other = next(s for s in SCOPES if s not in ("admin", route.scope))
        good = _call(srv, world.keys[other], route, world.own)
        if good.status_code != 403:
            wrong.append(f"{route.method} {route.path} with {other}: {good.status_code}")
            continue
        url = _fill(route.path, world.own)
        for what, malformed in MALFORMED.items():
            if route.method in ("GET", "DELETE") and what != "an unknown query parameter":
                continue  # no body to get wrong
            for key, want in ((world.keys[other], good.content), (None, None)):
                headers = {**_key(), **malformed.get("headers", {})}
                if key:
                    headers["Authorization"] = f"Bearer {key}"
                sent = {k: v for k, v in malformed.items() if k not in ("headers", "query")}
                target = url
                if "query" in malformed:  # added to the route's own query, if it has one
                    target += ("&" if "?" in url else "?") + malformed["query"]
                    if route.body is not None:
                        sent["json"] = _fill(route.body, world.own)
                answer = srv.http().request(route.method, target, headers=headers, **sent)
                if want is None:
                    ok = (answer.status_code, answer.json()["code"]) == (401, "unauthenticated")
                else:
                    ok = answer.status_code == 403 and answer.content == want
                if not ok:
                    who = other if key else "no key"
                    wrong.append(
                        f"{route.method} {route.path}, {what}, {who}: "
                        f"{answer.status_code} {answer.text}"
                    )
    assert wrong == []


def test_each_operation_declares_the_scope_its_key_needs(srv: Srv) -> None:
    spec = httpx.get(f"{srv.url}/openapi.json").json()
    for route in ROUTES:
        operation = spec["paths"][route.path.split("?")[0]][route.method.lower()]
        if route.scope in (PUBLIC, SIGNED):
            assert "security" not in operation, route
            continue
        needed = [] if route.scope is None else [route.scope]
        if route.path.startswith("/v1/balances"):  # what it needs is what it is asked for
            assert operation["security"] == [
                {"apiKey": ["members:read"]},
                {"apiKey": ["gift_cards:read"]},
            ]
            continue
        assert operation["security"] == [{"apiKey": needed}], route


# Secrets at rest ------------------------------------------------------------------------


def _secrets_flow(srv: Srv, tenant: dict[str, str]) -> dict[str, list[str]]:
    """Make every kind of secret the API hands out, and use them."""
    made: dict[str, list[str]] = {"key": [tenant["sandbox_key"], tenant["live_key"]]}
    _, sandbox_key = _sandbox(srv, tenant["sandbox_key"])
    made["key"].append(sandbox_key)
    made["key"] += list(_keys(srv, ("gift_cards:read", "admin"), "live").values())
    with srv.client(sandbox_key) as http:
        sell = {"id": "g-rest", "amount": "20.00"}
        headers = _key()
        card = http.post("/v1/gift-cards", json=sell, headers=headers)
        replay = http.post("/v1/gift-cards", json=sell, headers=headers)
        assert card.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert replay.content == card.content  # the sealed answer opens for the same key
        number, pin = card.json()["number"], card.json()["pin"]
        wrong = f"{(int(pin) + 1) % 10000:04d}"
        for tried in (pin, wrong):
            http.post(
                "/v1/gift-cards/inquiries", json={"number": number, "pin": tried}, headers=_key()
            )
        email = srv.remember("email", f"rest.{uuid.uuid4().hex[:6]}@example.com")
        _post(http, "/v1/members", {"id": "m-rest", "email": email, "phone": "+15550001234"})
        endpoint = _post(http, "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9/rest"})
        rotated = _post(http, f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret", None, 200)
        source = _post(http, "/v1/inbound/sources", {"mapping": "generic"})
    for key in made["key"]:
        srv.remember("api key", key)
    made["webhook"] = [endpoint["secret"], rotated["secret"]]
    made["inbound"] = [source["secret"]]
    made["number"], made["pin"] = [number], [pin]
    for kind, values in made.items():
        for value in values:
            srv.remember(kind, value)
    return made


def _cells(database: str) -> Iterator[tuple[str, str, str]]:
    """(table, column, text) for every non-null value of every table, as the database has it."""
    engine = sa.create_engine(database)
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(sa.select(table)).mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview):
                        text = bytes(value).decode("latin-1")
                    elif isinstance(value, dict | list):
                        text = json.dumps(value)
                    else:
                        text = str(value)
                    yield table.name, column, text
    engine.dispose()


def _assert_secrets_at_rest(database: str, made: dict[str, list[str]]) -> None:
    cells = list(_cells(database))
    assert len(cells) > 100  # the scan sees the data

    def where(value: str) -> set[str]:
        return {f"{t}.{c}" for t, c, text in cells if value in text}

    for key in made["key"]:
        secret_part = key.split("_", 3)[3]
        assert where(key) == set() and where(secret_part) == set(), key
        key_id = key[: -len(secret_part) - 1]
        assert "api_keys.id" in where(key_id)  # the visible prefix: how the key is found
    # Signing secrets must be recoverable to sign and to verify: kept where they are used, only.
    for secret in made["webhook"]:
        assert where(secret) == {"webhook_endpoints.secrets"}
    for secret in made["inbound"]:
        assert where(secret) == {"inbound_sources.secret"}
    # The card number is how an inquiry finds the card; the PIN only as a salted scrypt hash.
    for number in made["number"]:
        assert where(number) == {"gift_cards.number"}
    assert not [(t, c) for t, c, text in cells if '"pin"' in text]  # no body or answer holds one
    hashes = [text for t, c, text in cells if (t, c) == ("gift_cards", "pin_hash")]
    for pin in made["pin"]:
        assert any(cards.pin_matches(pin, stored) for stored in hashes)
        assert pin not in {text for _, _, text in cells}
    if database.startswith("sqlite:///"):  # and the files' raw bytes, free pages included
        path = Path(database.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        for key in made["key"]:
            assert key.split("_", 3)[3].encode() not in raw
        assert b'"pin"' not in raw


def test_no_api_key_or_pin_is_stored_in_sqlite(srv: Srv) -> None:
    _assert_secrets_at_rest(srv.database, _secrets_flow(srv, srv.a))


@pytest.mark.postgres
def test_no_api_key_or_pin_is_stored_in_postgres(postgres_template: str, tmp_path: Path) -> None:
    from ..conftest import POSTGRES_URL

    assert POSTGRES_URL is not None
    name = f"punchcard_sec_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    url = sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    tenant = _tenant(url, "Gamma Bowls")
    pg = Srv(url, tmp_path / "pg.log", tenant, tenant)
    pg.start()
    try:
        with pg.client(tenant["sandbox_key"]) as http:
            _post(http, "/v1/programs/versions", {"source": PROGRAM})
        _assert_secrets_at_rest(url, _secrets_flow(pg, tenant))
    finally:
        pg.stop()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# PINs, enumeration, rate limits ---------------------------------------------------------


def _inquire(http: httpx.Client, number: str, pin: str) -> httpx.Response:
    return http.post(
        "/v1/gift-cards/inquiries", json={"number": number, "pin": pin}, headers=_key()
    )


def _use_up_the_limit(http: httpx.Client, made: int = 0) -> list[httpx.Response]:
    """The rest of the limit's burst after `made` inquiries, at once: each does a full scrypt check, so sent one
    after another on a loaded machine they can outlast the limit's 60/limit seconds and
    earn another inquiry; sent together they all arrive within the burst."""
    left = INQUIRIES_PER_MINUTE - made
    with ThreadPoolExecutor(left) as pool:
        return list(pool.map(lambda _: _inquire(http, "6000000000000000", "0000"), range(left)))


def _wrong(pin: str) -> str:
    return f"{(int(pin) + 1) % 10000:04d}"


def test_five_wrong_pins_lock_the_card_alone_and_the_lock_survives_a_restart(srv: Srv) -> None:
    sandbox_id, key = _sandbox(srv, srv.a["sandbox_key"])
    with srv.client(key) as http:
        one = _post(http, "/v1/gift-cards", {"id": "g1", "amount": "25.00"})
        two = _post(http, "/v1/gift-cards", {"id": "g2", "amount": "5.00"})
        for card in (one, two):
            srv.remember("card number", card["number"])
            srv.remember("pin", card["pin"])
        number, pin = one["number"], one["pin"]
        # four wrong, then the right one: the count starts again
        assert [_inquire(http, number, _wrong(pin)).status_code for _ in range(4)] == [404] * 4
        assert _inquire(http, number, pin).status_code == 200
        assert [_inquire(http, number, _wrong(pin)).status_code for _ in range(4)] == [404] * 4
        assert _inquire(http, number, pin).status_code == 200
        # five in a row lock it; the right PIN is then answered as a wrong one
        refused = [_inquire(http, number, _wrong(pin)) for _ in range(5)]
        locked = _inquire(http, number, pin)
        assert locked.status_code == 404 and locked.content == refused[0].content
        assert _inquire(http, two["number"], two["pin"]).status_code == 200  # only that card
    other = _keys(srv, ("gift_cards:read",), sandbox_id)["gift_cards:read"]  # not per key either
    srv.remember("api key", other)
    srv.stop()
    srv.start()
    with srv.client(other) as http:
        after = _inquire(http, number, pin)
        assert (after.status_code, after.json()["code"]) == (404, "not_found")
        assert _inquire(http, two["number"], two["pin"]).status_code == 200


def test_unknown_cards_wrong_pins_and_locked_cards_answer_byte_for_byte_alike(srv: Srv) -> None:
    _, key = _sandbox(srv, srv.b["sandbox_key"])
    with srv.client(key) as http:
        card = _post(http, "/v1/gift-cards", {"id": "g1", "amount": "25.00"})
        srv.remember("card number", card["number"])
        srv.remember("pin", card["pin"])
        number, pin = card["number"], card["pin"]
        other = "1" if number[-2] == "0" else "0"  # one digit changed, a valid check digit
        unknown = number[:-2] + other + cards.luhn_digit(number[:-2] + other)
        assert unknown != number
        answers = {
            "unknown number": _inquire(http, unknown, pin),
            "not a card number": _inquire(http, "1234", pin),
            **{f"wrong pin {n}": _inquire(http, number, _wrong(pin)) for n in range(5)},
            "locked, right pin": _inquire(http, number, pin),
        }
    first = answers["unknown number"]
    assert (first.status_code, first.json()["code"]) == (404, "not_found")

    def shown(answer: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in answer.headers.items() if k not in ("date", "x-request-id")}

    for name, answer in answers.items():
        assert (answer.status_code, answer.content, shown(answer)) == (
            first.status_code,
            first.content,
            shown(first),
        ), name


def test_inquiries_over_the_limit_get_429_with_a_problem_and_retry_after(srv: Srv) -> None:
    _, key = _sandbox(srv, srv.b["sandbox_key"])
    _, neighbour = _sandbox(srv, srv.b["sandbox_key"])
    with srv.client(key) as http:
        began = time.monotonic()
        answers = _use_up_the_limit(http)
        earned_back = []  # an inquiry refills every 60/limit s: a loaded machine may earn some
        while (limited := _inquire(http, "6000000000000000", "0000")).status_code == 404:
            earned_back.append(limited)
            assert len(earned_back) <= INQUIRIES_PER_MINUTE, "the limit never held"
        took = time.monotonic() - began
    assert [a.status_code for a in answers] == [404] * INQUIRIES_PER_MINUTE
    assert len(earned_back) <= took // (60 / INQUIRIES_PER_MINUTE), (len(earned_back), took)
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json() | {"detail": None} == {
        "type": "https://punchcard.dev/problems/rate_limited",
        "title": "rate limited",
        "status": 429,
        "code": "rate_limited",
        "detail": None,
    }
    assert 1 <= int(limited.headers["retry-after"]) <= 60 / INQUIRIES_PER_MINUTE + 1
    with srv.client(neighbour) as http:  # the limit is per key
        assert _inquire(http, "6000000000000000", "0000").status_code == 404


def test_an_inquiry_replayed_under_its_key_is_its_answer_and_not_counted(srv: Srv) -> None:
    """A replay is the stored answer, byte for byte, and uses none of the limit; a request
    without a key is told so (both were 429 once the limit was used up)."""
    _, key = _sandbox(srv, srv.b["sandbox_key"])
    asked = {"number": "6000000000000000", "pin": "0000"}
    with srv.client(key) as http:
        began = time.monotonic()
        first = http.post("/v1/gift-cards/inquiries", json=asked, headers={"Idempotency-Key": "i"})
        replays = [
            http.post("/v1/gift-cards/inquiries", json=asked, headers={"Idempotency-Key": "i"})
            for _ in range(INQUIRIES_PER_MINUTE + 2)
        ]
        keyless = http.post("/v1/gift-cards/inquiries", json=asked)
        fresh = [*_use_up_the_limit(http, made=1), _inquire(http, "6000000000000000", "0000")]
        took = time.monotonic() - began
    assert first.status_code == 404
    assert {(r.status_code, r.content, r.headers["idempotent-replayed"]) for r in replays} == {
        (404, first.content, "true")
    }
    assert (keyless.status_code, keyless.json()["code"]) == (400, "idempotency_key_missing")
    statuses = [a.status_code for a in fresh]
    # The 22 replays used none of the limit: all but the first inquiry's share is left.
    assert statuses.count(404) >= INQUIRIES_PER_MINUTE - 1, statuses
    if took < 60 / INQUIRIES_PER_MINUTE:  # none earned back meanwhile (a loaded machine can
        # take longer than one inquiry's refill over these 44 requests): the limit holds
        assert statuses == [404] * (INQUIRIES_PER_MINUTE - 1) + [429]


# Webhook URLs ---------------------------------------------------------------------------

PRIVATE_URLS = [
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://10.0.0.1/hook",
    "http://172.16.0.1/hook",
    "http://172.31.255.254/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/hook",
    "http://0/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:a9fe:a9fe]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 to 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 to the metadata address
    "http://[64:ff9b:1::a00:1]/hook",
    "http://[2002:a00:1::1]/hook",  # 6to4 through 10.0.0.1
    "http://[::127.0.0.1]/hook",
    "http://[::ffff:0:a00:1]/hook",
    "http://100.64.0.1/hook",
    "http://2130706433/hook",
    "http://017700000001/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f.1/hook",
    "http://0x7f000001/hook",
    "http://example.com@127.0.0.1/hook",
    "http://user:pass@10.0.0.1:8080/hook",
    "http://1.1.1.1\\@127.0.0.1/hook",
    "https://localhost/hook",
]
NOT_HTTP = [
    "ftp://93.184.216.34/hook",
    "file:///etc/passwd",
    "gopher://93.184.216.34/",
    "http:///x",
]


def test_live_webhooks_never_point_at_private_addresses_on_create_or_patch(srv: Srv) -> None:
    with srv.client(srv.a["live_key"]) as http:
        public = _post(
            http,
            "/v1/webhooks/endpoints",
            {"url": "http://93.184.216.34/hook", "event_types": ["tier.changed"]},
        )
        srv.remember("webhook secret", public["secret"])
        path = f"/v1/webhooks/endpoints/{public['id']}"
        for url in PRIVATE_URLS + NOT_HTTP:
            made = http.post("/v1/webhooks/endpoints", json={"url": url}, headers=_key())
            patched = http.patch(path, json={"url": url}, headers=_key())
            for answer in (made, patched):
                assert (answer.status_code, answer.json()["code"]) == (422, "invalid_input"), url
        assert http.get(path).json()["url"] == "http://93.184.216.34/hook"
        urls = {e["url"] for e in http.get("/v1/webhooks/endpoints").json()["endpoints"]}
        assert urls <= {"http://93.184.216.34/hook", "http://93.184.216.34/hooks"}


def test_sandboxes_may_send_to_private_addresses_but_only_over_http(srv: Srv) -> None:
    _, key = _sandbox(srv, srv.b["sandbox_key"])
    with srv.client(key) as http:
        for url in ["http://127.0.0.1:9/hook", "http://169.254.169.254/", "http://[::1]:9/"]:
            made = _post(
                http, "/v1/webhooks/endpoints", {"url": url, "event_types": ["tier.changed"]}
            )
            srv.remember("webhook secret", made["secret"])
        for url in NOT_HTTP:
            refused = http.post("/v1/webhooks/endpoints", json={"url": url}, headers=_key())
            assert (refused.status_code, refused.json()["code"]) == (422, "invalid_input"), url


# Logs -----------------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Receiver.got.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_the_logs_at_debug_hold_no_personal_data_and_no_secret(srv: Srv) -> None:
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    sandbox_id, key = _sandbox(srv, srv.a["sandbox_key"])
    narrow = srv.remember("api key", _keys(srv, ("members:read",), sandbox_id)["members:read"])
    path_token = srv.remember("receiver's URL token", "pathtok" + uuid.uuid4().hex)
    query_token = srv.remember("receiver's URL token", "querytok" + uuid.uuid4().hex)
    url = f"http://127.0.0.1:{receiver.server_port}/hooks/{path_token}?token={query_token}"
    email = srv.remember("email", f"log.{uuid.uuid4().hex[:6]}@example.com")
    phone = srv.remember("phone", "+1555" + str(uuid.uuid4().int)[:7])
    loyalty_card = srv.remember("card number", "LC" + uuid.uuid4().hex[:12])
    with srv.client(key) as http:
        endpoint = _post(http, "/v1/webhooks/endpoints", {"url": url})
        srv.remember("webhook secret", endpoint["secret"])
        rotated = _post(http, f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret", None, 200)
        srv.remember("webhook secret", rotated["secret"])
        member = {"id": "ann", "email": email, "phone": phone, "card_number": loyalty_card}
        _post(http, "/v1/members", member)
        _post(http, "/v1/orders", {"id": "o1", "member": "ann", "lines": [BURRITO]})
        card = _post(http, "/v1/gift-cards", {"id": "g1", "amount": "10.00"})
        srv.remember("card number", card["number"])
        srv.remember("pin", card["pin"])
        assert _inquire(http, card["number"], card["pin"]).status_code == 200
        assert _inquire(http, card["number"], _wrong(card["pin"])).status_code == 404
        source = _post(http, "/v1/inbound/sources", {"mapping": "generic"})
        srv.remember("inbound secret", source["secret"])
        event = {"id": "evt_1", "type": "order.placed",
                 "order": {"id": "o2", "member": "ann", "lines": [BURRITO]}}  # fmt: skip
        body = json.dumps(event).encode()
        stamp = str(int(time.time()))
        for secret, want in ((source["secret"], 202), ("not-the-secret", 401)):
            sent = httpx.post(
                f"{srv.url}{source['url']}",
                content=body,
                headers={
                    "x-punchcard-timestamp": stamp,
                    "x-punchcard-signature": signature(secret, stamp, body),
                },
            )
            assert sent.status_code == want
        # errors: 422 with personal data in the body, 404, a query string carrying some
        assert (
            http.post("/v1/members", json={"id": "", "email": email}, headers=_key()).status_code
            == 422
        )
        assert http.get("/v1/members/nobody").status_code == 404
        # Parameters it does not take: refused by name, and the values are logged nowhere.
        assert http.get(f"/v1/members/ann?email={email}&phone={phone}").status_code == 422
        assert (
            http.post(
                "/v1/gift-cards/inquiries", json={"number": card["number"]}, headers=_key()
            ).status_code
            == 422
        )
    with srv.client(narrow) as http:
        assert http.post("/v1/members", json=member, headers=_key()).status_code == 403
    forged = key[: key.rindex("_") + 1] + "z" * 43
    with srv.client(forged) as http:
        assert http.get("/v1/members/ann").status_code == 401
    _wait(lambda: any(path_token in p for p in _Receiver.got))  # the worker delivered
    receiver.shutdown()
    log = srv.log.read_text()
    assert " DEBUG " in log and '"POST /v1/gift-cards/inquiries HTTP/1.1" 200' in log
    leaks = []
    for kind, value in srv.secrets:
        if kind == "pin":  # four digits: as a token of its own, not inside a time or a number
            found = re.search(rf"(?<![\d.:,-]){value}(?![\d.:,-])", log)
        else:
            found = re.search(re.escape(value), log)
            if kind == "api key":
                found = found or re.search(re.escape(value.split("_", 3)[3]), log)
        if found:
            line = log[log.rfind("\n", 0, found.start()) + 1 : log.find("\n", found.end())]
            leaks.append(f"{kind}: {line}")
    assert leaks == []
