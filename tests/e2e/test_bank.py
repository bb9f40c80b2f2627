"""A Jepsen-style bank test on a real server: transfers, redemptions and snapshot reads racing.

Ten gift cards and ten members start with known balances. For PUNCHCARD_BANK_S seconds
(default 7) threads transfer between random pairs (some amounts beyond the balance),
redeem (gift card redemptions, holds then captures or voids, rewards bought with
points) and read every account in one snapshot (`GET /v1/balances`). A few writes are
sent with a timeout of milliseconds, so their outcome is unknown to the client: they may
apply after the client gave up. Every invocation and its outcome (ok, fail, unknown) is
recorded. Afterwards unknown outcomes are resolved by retrying with the same
Idempotency-Key, and the history is checked:

- each read lies within what the history allows: for every account and for each asset's
  total, between the start plus every write that completed before the read began and
  the start plus every write that began before the read ended (negative and positive
  changes bounded apart); a transfer changes no total, so a read that saw one half of a
  transfer and not the other fails the total's bounds;
- no balance is ever negative;
- at the end every account is exactly its start plus the changes of the writes that
  applied, the request log has no 5xx, and `punchcard audit` passes on the database.
"""

from __future__ import annotations

import bisect
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from .conftest import Server, cli

DURATION_S = float(os.environ.get("PUNCHCARD_BANK_S", "7"))
UNKNOWN_RATE = 0.03  # writes sent with a timeout of milliseconds: their outcome is unknown
CARDS = [f"bank-g{i}" for i in range(10)]
MEMBERS = [f"bank-m{i}" for i in range(10)]
CARD_START = {card: 10_000 + 1_000 * i for i, card in enumerate(CARDS)}  # cents
BURRITOS = {member: 50 + 5 * i for i, member in enumerate(MEMBERS)}  # 100 points each
POINTS_START = {member: 100 * qty for member, qty in BURRITOS.items()}
REWARD_COST = {"five-off": 500, "free-burrito": 1250}
# What a write may answer besides success; anything else is a bug.
EXPECTED_FAILURES = {
    "transfer_card": {"insufficient_funds"},
    "redeem_card": {"insufficient_funds"},
    "authorize": {"insufficient_funds"},
    "capture": {"not_found"},  # its authorization had not applied (its outcome was unknown)
    "void": {"not_found"},
    "transfer_points": {"insufficient_points"},
    "redeem_reward": {"insufficient_points"},
}
MONEY, POINTS = "$money", "$points"  # pseudo-accounts: each asset's total


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _cents(money: dict[str, str]) -> int:
    whole, _, frac = money["amount"].partition(".")
    return int(whole) * 100 + int(frac)


@dataclass
class Op:
    """One write: what it would change if it applied, and what the client saw of it."""

    kind: str
    method: str
    path: str
    body: dict[str, Any] | None
    deltas: dict[str, int]  # account -> change, if it applied
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    inv: float = 0.0
    comp: float = float("inf")  # unknown outcomes may apply at any time after inv
    outcome: str = "unknown"  # ok | fail | unknown (as the client first saw it)
    applied: bool | None = None  # after resolution
    code: str | None = None

    def totals(self) -> dict[str, int]:
        """The changes per account plus each asset's total."""
        out = dict(self.deltas)
        for asset, names in ((MONEY, CARDS), (POINTS, MEMBERS)):
            total = sum(d for a, d in self.deltas.items() if a in names)
            if any(a in names for a in self.deltas):
                out[asset] = total
        return out


@dataclass
class Read:
    inv: float
    comp: float
    balances: dict[str, int]


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _invoke(http: httpx.Client, op: Op, history: History, timeout_s: float = 30.0) -> None:
    """Send the write once; record ok, fail or unknown."""
    op.inv = time.monotonic()
    try:
        answer = http.request(
            op.method,
            op.path,
            json=op.body,
            headers={"Idempotency-Key": op.key},
            timeout=timeout_s,
        )
    except httpx.TransportError:
        return  # unknown: it may have applied, now or later
    done = time.monotonic()
    _judge(op, answer, history)
    if op.applied is not None:
        op.outcome, op.comp = "ok" if op.applied else "fail", done


def _judge(op: Op, answer: httpx.Response, history: History) -> None:
    if answer.status_code < 300:
        op.applied = True
        return
    try:
        code = answer.json().get("code")
    except ValueError:
        code = None
    if answer.status_code >= 500 or code == "idempotency_key_in_flight":
        if answer.status_code >= 500:
            with history.lock:
                history.server_errors.append(f"{op.kind} {op.path}: {answer.status_code}")
        return  # unknown
    op.applied, op.code = False, code
    if code not in EXPECTED_FAILURES[op.kind]:
        with history.lock:
            history.unexpected.append(f"{op.kind} {op.path} {op.body}: {answer.text}")


def _resolve(http: httpx.Client, op: Op, history: History) -> None:
    """An unknown outcome: retry with the same key until the server says what happened."""
    deadline = time.monotonic() + 60
    while op.applied is None:
        assert time.monotonic() < deadline, f"could not resolve {op}"
        try:
            answer = http.request(
                op.method, op.path, json=op.body, headers={"Idempotency-Key": op.key}, timeout=30
            )
        except httpx.TransportError:
            continue
        if answer.status_code == 409 and answer.json().get("code") == "idempotency_key_in_flight":
            time.sleep(0.2)
            continue
        _judge(op, answer, history)


class Bank:
    def __init__(self, server: Server, key: str, seed: int) -> None:
        self.server, self.key, self.seed = server, key, seed
        self.history = History()
        self.stop = threading.Event()

    def _write(self, http: httpx.Client, rng: random.Random, op: Op) -> Op:
        timeout = rng.uniform(0.001, 0.02) if rng.random() < UNKNOWN_RATE else 30.0
        _invoke(http, op, self.history, timeout)
        with self.history.lock:
            self.history.ops.append(op)
        return op

    def transferrer(self, worker: int) -> None:
        rng = random.Random(self.seed * 100 + worker)
        with self.server.client(self.key) as http:
            while not self.stop.is_set():
                if rng.random() < 0.5:
                    source, target = rng.sample(CARDS, 2)
                    cents = rng.randint(1, 6_000)
                    self._write(
                        http,
                        rng,
                        Op(
                            "transfer_card",
                            "POST",
                            f"/v1/gift-cards/{source}/transfers",
                            {"to": target, "amount": _money(cents)},
                            {source: -cents, target: cents},
                        ),
                    )
                else:
                    source, target = rng.sample(MEMBERS, 2)
                    points = rng.randint(1, 3_000)
                    self._write(
                        http,
                        rng,
                        Op(
                            "transfer_points",
                            "POST",
                            f"/v1/members/{source}/points/transfers",
                            {"to": target, "points": points},
                            {source: -points, target: points},
                        ),
                    )

    def redeemer(self, worker: int) -> None:
        rng = random.Random(self.seed * 100 + 50 + worker)
        with self.server.client(self.key) as http:
            while not self.stop.is_set():
                roll = rng.random()
                card = rng.choice(CARDS)
                if roll < 0.35:
                    cents = rng.randint(1, 2_000)
                    self._write(
                        http,
                        rng,
                        Op(
                            "redeem_card",
                            "POST",
                            f"/v1/gift-cards/{card}/redeem",
                            {"amount": _money(cents)},
                            {card: -cents},
                        ),
                    )
                elif roll < 0.7:
                    self._hold(http, rng, card)
                else:
                    member, reward = rng.choice(MEMBERS), rng.choice(sorted(REWARD_COST))
                    self._write(
                        http,
                        rng,
                        Op(
                            "redeem_reward",
                            "POST",
                            f"/v1/members/{member}/rewards",
                            {"reward": reward},
                            {member: -REWARD_COST[reward]},
                        ),
                    )

    def _hold(self, http: httpx.Client, rng: random.Random, card: str) -> None:
        cents, hold = rng.randint(1, 3_000), f"bank-h-{uuid.uuid4().hex[:12]}"
        body = {"amount": _money(cents), "id": hold}
        held = self._write(
            http, rng, Op("authorize", "POST", f"/v1/gift-cards/{card}/holds", body, {card: -cents})
        )
        if held.outcome == "fail":
            return
        path = f"/v1/gift-cards/holds/{hold}"
        if rng.random() < 0.5:
            self._write(http, rng, Op("void", "POST", f"{path}/void", None, {card: cents}))
        elif rng.random() < 0.5:
            self._write(http, rng, Op("capture", "POST", f"{path}/capture", {}, {card: 0}))
        else:
            take = rng.randint(1, cents)
            self._write(
                http,
                rng,
                Op(
                    "capture",
                    "POST",
                    f"{path}/capture",
                    {"amount": _money(take)},
                    {card: cents - take},
                ),
            )

    def reader(self, _worker: int) -> None:
        with self.server.client(self.key) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                balances = read_all(http)
                read = Read(started, time.monotonic(), balances)
                with self.history.lock:
                    self.history.reads.append(read)
                time.sleep(0.005)


def read_all(http: httpx.Client) -> dict[str, int]:
    """Every account in one snapshot, with each asset's total."""
    answer = http.get("/v1/balances", params={"member": MEMBERS, "gift_card": CARDS})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    balances = {m["member"]: m["posted"] for m in body["members"]}
    balances.update({c["id"]: _cents(c["balance"]) for c in body["gift_cards"]})
    balances[MONEY] = sum(balances[c] for c in CARDS)
    balances[POINTS] = sum(balances[m] for m in MEMBERS)
    return balances


def _starts() -> dict[str, int]:
    start = {**CARD_START, **POINTS_START}
    start[MONEY], start[POINTS] = sum(CARD_START.values()), sum(POINTS_START.values())
    return start


def check_reads(ops: list[Op], reads: list[Read]) -> list[str]:
    """Each read within its bounds (see the module docstring); prefix sums keep it fast."""
    start = _starts()
    by_inv: dict[str, tuple[list[float], list[int], list[int]]] = {}
    by_comp: dict[str, tuple[list[float], list[int], list[int]]] = {}
    for index, attr in ((by_inv, "inv"), (by_comp, "comp")):
        changes: dict[str, list[tuple[float, int]]] = {}
        for op in ops:
            if op.applied:
                for account, delta in op.totals().items():
                    changes.setdefault(account, []).append((getattr(op, attr), delta))
        for account, items in changes.items():
            items.sort()
            times, neg, pos = [], [0], [0]
            for at, delta in items:
                times.append(at)
                neg.append(neg[-1] + min(0, delta))
                pos.append(pos[-1] + max(0, delta))
            index[account] = (times, neg, pos)

    def upto(
        index: dict[str, tuple[list[float], list[int], list[int]]], account: str, t: float
    ) -> tuple[int, int]:
        if account not in index:
            return 0, 0
        times, neg, pos = index[account]
        i = bisect.bisect_left(times, t)
        return neg[i], pos[i]

    bad = []
    for read in reads:
        for account, seen in read.balances.items():
            if seen < 0:
                bad.append(f"{account} read {seen} at {read.inv:.3f}")
            began_neg, began_pos = upto(by_inv, account, read.comp)  # began before the read ended
            done_neg, done_pos = upto(by_comp, account, read.inv)  # ended before the read began
            low, high = start[account] + began_neg + done_pos, start[account] + began_pos + done_neg
            if not low <= seen <= high:
                bad.append(f"{account} read {seen} at {read.inv:.3f}, outside [{low}, {high}]")
    return bad


def _setup(server: Server, key: str) -> None:
    with server.client(key) as http:

        def post(path: str, body: dict[str, Any]) -> Any:
            answer = http.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
            assert answer.status_code < 300, answer.text
            return answer.json()

        for card, cents in CARD_START.items():
            post("/v1/gift-cards", {"id": card, "amount": _money(cents)})
        token = ""
        for member, qty in BURRITOS.items():
            post("/v1/members", {"id": member})
            line = {
                "id": "l1",
                "sku": "BURR",
                "category": "burrito",
                "qty": qty,
                "unit_price": "10.00",
            }
            order = {"id": f"{member}-o1", "member": member, "lines": [line]}
            token = post("/v1/orders", order)["consistency_token"]
        # Once the last order's points have posted, every one's have.
        waited = http.get("/v1/consistency", params={"consistency_token": token, "wait_ms": 5000})
        assert waited.json()["consistent"] is True
        assert read_all(http) == _starts()


@pytest.fixture(scope="module")
def sandbox(server: Server) -> dict[str, str]:
    """A named sandbox of tenant A: its id and admin key."""
    with server.client(server.a["sandbox_key"]) as http:
        made = http.post(
            "/v1/sandboxes",
            json={"name": f"bank-{uuid.uuid4().hex[:6]}", "start": "2026-03-03T12:00:00-06:00"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
    assert made.status_code == 201, made.text
    return {"id": made.json()["id"], "key": made.json()["key"]}


@pytest.fixture(scope="module")
def bank_key(server: Server, sandbox: dict[str, str]) -> str:
    """The sandbox's key, with the bank's accounts made."""
    _setup(server, sandbox["key"])
    return sandbox["key"]


def test_concurrent_transfers_redemptions_and_reads_keep_the_books(
    server: Server, bank_key: str
) -> None:
    bank = Bank(server, bank_key, seed=7)
    roles = [bank.transferrer] * 3 + [bank.redeemer] * 2 + [bank.reader] * 2
    threads = [threading.Thread(target=role, args=(i,)) for i, role in enumerate(roles)]
    for thread in threads:
        thread.start()
    time.sleep(DURATION_S)
    bank.stop.set()
    for thread in threads:
        thread.join(timeout=120)
    history = bank.history

    with server.client(bank_key) as http:
        unknown = [op for op in history.ops if op.applied is None]
        for op in unknown:
            _resolve(http, op, history)
        final = read_all(http)

    kinds = sorted({op.kind for op in history.ops})
    summary = {
        kind: {
            outcome: sum(1 for op in history.ops if op.kind == kind and op.outcome == outcome)
            for outcome in ("ok", "fail", "unknown")
        }
        for kind in kinds
    }
    print(f"\nbank on {server.database.split(':')[0]}: {len(history.reads)} reads, {summary}")
    assert history.server_errors == []
    assert history.unexpected == []
    assert kinds == sorted(EXPECTED_FAILURES)  # every kind of write ran ...
    for kind in ("transfer_card", "transfer_points", "redeem_card", "authorize", "redeem_reward"):
        assert summary[kind]["ok"] > 0, summary  # ... and some of each applied
    assert summary["transfer_card"]["fail"] > 0  # some transfers asked for more than there was
    assert len(history.reads) >= 5

    violations = check_reads(history.ops, history.reads)
    assert violations == [], f"{len(violations)} reads out of bounds: {violations[:5]}"

    expected = _starts()
    for op in history.ops:
        if op.applied:
            for account, delta in op.totals().items():
                expected[account] += delta
    assert final == expected

    report = cli("audit", "--database", server.database)
    assert report.strip().endswith("0 failed"), report


def _balances(http: httpx.Client, members: list[str], cards: list[str]) -> dict[str, int]:
    answer = http.get("/v1/balances", params={"member": members, "gift_card": cards})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    out = {m["member"]: m["posted"] for m in body["members"]}
    out.update({c["id"]: _cents(c["balance"]) for c in body["gift_cards"]})
    return out


def _post(http: httpx.Client, path: str, body: dict[str, Any], key: str | None = None) -> Any:
    return http.post(path, json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex})


def _accounts(http: httpx.Client, tag: str) -> tuple[str, str, str, str]:
    """Two cards (5.00 and 1.00) and two members (300 points and none), named by tag."""
    cards, people = (f"{tag}-g1", f"{tag}-g2"), (f"{tag}-m1", f"{tag}-m2")
    _post(http, "/v1/gift-cards", {"id": cards[0], "amount": "5.00"})
    _post(http, "/v1/gift-cards", {"id": cards[1], "amount": "1.00"})
    for member in people:
        _post(http, "/v1/members", {"id": member})
    line = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 3, "unit_price": "10.00"}
    placed = _post(http, "/v1/orders", {"id": f"{tag}-o1", "member": people[0], "lines": [line]})
    token = placed.json()["consistency_token"]
    http.get("/v1/consistency", params={"consistency_token": token, "wait_ms": 5000})
    assert _balances(http, list(people), list(cards)) == {
        cards[0]: 500,
        cards[1]: 100,
        people[0]: 300,
        people[1]: 0,
    }
    return (*cards, *people)


def _at_once(
    server: Server, api_key: str, path: str, body: dict[str, Any], key: str, count: int
) -> list[httpx.Response]:
    """`count` identical requests released together."""
    barrier = threading.Barrier(count)
    answers: list[httpx.Response] = []

    def send() -> None:
        with server.client(api_key) as http:
            barrier.wait()
            answers.append(_post(http, path, body, key))

    threads = [threading.Thread(target=send) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def test_fifty_identical_transfer_requests_apply_once(server: Server, bank_key: str) -> None:
    """One Idempotency-Key, fifty requests at once: a gift card transfer on SQLite, a points
    transfer on PostgreSQL (one each keeps the suite's time; the idempotency is shared)."""
    with server.client(bank_key) as http:
        g1, g2, m1, m2 = _accounts(http, "idem")
    state = {g1: 500, g2: 100, m1: 300, m2: 0}
    cases: list[tuple[str, dict[str, Any], dict[str, int]]] = [
        (f"/v1/gift-cards/{g1}/transfers", {"to": g2, "amount": "1.23"}, {g1: 377, g2: 223})
        if server.database.startswith("sqlite")
        else (f"/v1/members/{m1}/points/transfers", {"to": m2, "points": 77}, {m1: 223, m2: 77})
    ]
    for path, body, expected in cases:
        key = uuid.uuid4().hex
        answers = _at_once(server, bank_key, path, body, key, 50)
        assert len(answers) == 50
        assert {a.status_code for a in answers} <= {201, 409}
        assert {a.json()["code"] for a in answers if a.status_code == 409} <= {
            "idempotency_key_in_flight"
        }
        with server.client(bank_key) as http:
            while (last := _post(http, path, body, key)).status_code == 409:
                time.sleep(0.1)
            assert last.status_code == 201 and last.headers["Idempotent-Replayed"] == "true"
            # Every success is the one answer, byte for byte.
            assert {a.content for a in answers if a.status_code == 201} <= {last.content}
            state.update(expected)  # moved once
            assert _balances(http, [m1, m2], [g1, g2]) == state


def test_transfers_and_snapshot_reads_over_http(
    server: Server, sandbox: dict[str, str], bank_key: str
) -> None:
    """Statuses, codes and bodies of the new endpoints, and the scopes they need."""
    with server.client(bank_key) as http:
        g1, g2, m1, m2 = _accounts(http, "http")
        moved = _post(http, f"/v1/gift-cards/{g1}/transfers", {"to": g2, "amount": "4.50"})
        assert moved.status_code == 201, moved.text
        body = moved.json()
        assert body["id"].startswith("tr_") and body["consistency_token"]
        assert (body["amount"], body["from"]["balance"], body["to"]["balance"]) == (
            {"amount": "4.50", "currency": "USD"},
            {"amount": "0.50", "currency": "USD"},
            {"amount": "5.50", "currency": "USD"},
        )
        moved = _post(http, f"/v1/members/{m1}/points/transfers", {"to": m2, "points": 120})
        assert moved.status_code == 201, moved.text
        body = moved.json()
        assert (body["points"], body["paid_debt"]) == (120, 0)
        assert (body["from"]["posted"], body["to"]["posted"]) == (180, 120)

        def problem(path: str, payload: dict[str, Any]) -> tuple[int, str]:
            answer = _post(http, path, payload)
            return answer.status_code, answer.json()["code"]

        card, points = f"/v1/gift-cards/{g1}/transfers", f"/v1/members/{m1}/points/transfers"
        assert problem(card, {"to": g2, "amount": "0.51"}) == (402, "insufficient_funds")
        assert problem(card, {"to": g1, "amount": "0.10"}) == (422, "invalid_input")
        assert problem(card, {"to": "nope", "amount": "0.10"}) == (404, "not_found")
        assert problem("/v1/gift-cards/nope/transfers", {"to": g2, "amount": "0.10"}) == (
            404,
            "not_found",
        )
        assert problem(card, {"to": g2, "amount": "-1"}) == (422, "invalid_input")
        assert problem(card, {"to": g2}) == (422, "invalid_input")
        assert problem(points, {"to": m2, "points": 181}) == (409, "insufficient_points")
        assert problem(points, {"to": m1, "points": 1}) == (422, "invalid_input")
        assert problem(points, {"to": "nope", "points": 1}) == (404, "not_found")
        for wrong in (0, -1, "5", 1.5, True, 10**13):
            assert problem(points, {"to": m2, "points": wrong}) == (422, "invalid_input"), wrong
        assert _balances(http, [m1, m2], [g1, g2]) == {g1: 50, g2: 550, m1: 180, m2: 120}

        def read(params: dict[str, Any]) -> tuple[int, str]:
            answer = http.get("/v1/balances", params=params)
            return answer.status_code, answer.json().get("code", "")

        assert read({}) == (422, "invalid_input")
        assert read({"member": [m1] * 60, "gift_card": [g1] * 41}) == (422, "invalid_input")
        assert read({"member": [m1] * 60, "gift_card": [g1] * 40})[0] == 200
        assert read({"member": [m1, "nope"]}) == (404, "not_found")
        assert read({"gift_card": ["nope"]}) == (404, "not_found")
        # A key that may read cards but not members, nor move anything.
        narrow = cli(
            "key",
            "create",
            "--tenant",
            server.a["tenant"],
            "--database",
            server.database,
            "--environment",
            sandbox["id"],
            "--scope",
            "gift_cards:read",
        ).strip()
    with server.client(narrow) as http:
        assert read_with(http, {"gift_card": [g1]}) == 200
        assert read_with(http, {"gift_card": [g1], "member": [m1]}) == 403
        assert _post(http, card, {"to": g2, "amount": "0.01"}).status_code == 403
        assert _post(http, points, {"to": m2, "points": 1}).status_code == 403


def read_with(http: httpx.Client, params: dict[str, Any]) -> int:
    return http.get("/v1/balances", params=params).status_code
