"""The data set as a stream of API requests in time order, made a day at a time.

Only one day of orders, the follow-ups still to come (closes, refunds, voids), the
members' visit rates and the funded gift cards are in memory, so a million orders
stream in constant memory per day. Each operation is exactly a request the HTTP API
accepts, given in the order a POS would send it.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

from punchcard.engine.money import format_money
from punchcard.synthetic.baskets import basket
from punchcard.synthetic.chain import (
    DEFAULT_START,
    Chain,
    Members,
    make_chain,
    make_members,
    member_id,
)
from punchcard.synthetic.gift_cards import (
    IN_STORE_PER_MILLE,
    ONLINE_PER_MILLE,
    SELF_PERCENT,
    USE_PERCENT,
    Wallets,
    card_id,
)
from punchcard.synthetic.timing import (
    CLOSES_S,
    OPENS_S,
    day_opens_utc,
    local_second,
    local_time,
    orders_per_day,
)

DEMO_PROGRAM = Path(__file__).resolve().parent.parent / "demo" / "burrito-rewards.yaml"

AWAY_PERCENT = 10  # orders a member places away from their home store
OPEN_PERCENT = 4  # dine-in tabs: placed open, closed 15 to 75 minutes later
VOID_PER_MILLE = 10  # voided at the POS 1 to 20 minutes after closing
REFUND_PER_MILLE = 25  # refunded, in full (35%) or in part (65%)
FULL_REFUND_PERCENT = 35
SECOND_REFUND_PERCENT = 15  # partial refunds followed by another one
SAME_DAY_REFUND_PERCENT = 70  # within hours (mean 90 minutes); the rest 1 to 10 days later
TENDERS = ("card", "cash", "wallet")
TENDER_CUMULATIVE = tuple(accumulate((82, 10, 8)))  # how often each pays


@dataclass(frozen=True, slots=True)
class Operation:
    """One API request: when it happens, what it is, and exactly what is sent."""

    at: datetime  # UTC
    kind: str
    method: str
    path: str
    idempotency_key: str
    body: dict[str, Any] | None  # None: the request has no body

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "idempotency_key": self.idempotency_key,
            "body": self.body,
        }

    def to_json(self) -> str:
        """One line of operations.jsonl."""
        return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=False)


def operations(
    *,
    seed: int = 7,
    orders: int = 10_000,
    stores: int | None = None,
    members: int | None = None,
    start: date = DEFAULT_START,
    days: int | None = None,
    program: str | None = None,
) -> Iterator[Operation]:
    """The operations of a synthetic chain, streamed; `program` defaults to the demo program."""
    chain = make_chain(
        seed=seed, orders=orders, stores=stores, members=members, start=start, days=days
    )
    return stream(chain, DEMO_PROGRAM.read_text() if program is None else program)


def stream(chain: Chain, program: str) -> Iterator[Operation]:
    """The operations of `chain` in time order (ties in the order they must be sent)."""
    return _Generator(chain, program).run()


class _Generator:
    def __init__(self, chain: Chain, program: str) -> None:
        self.chain = chain
        self.program = program
        self.members: Members = make_members(chain)
        self.rng = random.Random(f"{chain.seed}:orders")
        self.later = random.Random(f"{chain.seed}:follow-ups")
        self.wallets = Wallets()
        self.enrolled = bytearray(chain.members)
        self.pending: list[tuple[datetime, int, Operation]] = []  # a heap by (time, sequence)
        self.sequence = 0
        self.placed = 0

    def run(self) -> Iterator[Operation]:
        first = datetime.combine(self.chain.start, time(0), tzinfo=UTC)
        self._push(
            Operation(
                first,
                "publish_program",
                "POST",
                "/v1/programs/versions",
                f"publish_program:{self.chain.seed}",
                {"source": self.program, "activate": True},
            )
        )
        for n, count in enumerate(orders_per_day(self.chain)):
            day = self.chain.start + timedelta(days=n)
            self._day(day, count)
            horizon = day_opens_utc(self.chain, day + timedelta(days=1))
            while self.pending and self.pending[0][0] < horizon:
                yield heapq.heappop(self.pending)[2]
        while self.pending:
            yield heapq.heappop(self.pending)[2]

    def _push(self, op: Operation) -> None:
        self.sequence += 1
        heapq.heappush(self.pending, (op.at, self.sequence, op))

    def _day(self, day: date, count: int) -> None:
        """Make one local day's orders and online gift card sales, in time order."""
        rng = self.rng
        stores = self.chain.stores
        events: list[tuple[datetime, int, int, int]] = []  # (UTC time, member or -1, store, second)
        for member in self.members.pick(rng, count):
            home = self.members.home[member]
            store = home if rng.randrange(100) >= AWAY_PERCENT else rng.randrange(len(stores))
            second = local_second(rng)
            at = local_time(stores[store], day, second).astimezone(UTC)
            events.append((at, member, store, second))
            if rng.randrange(1000) < ONLINE_PER_MILLE:
                store = rng.randrange(len(stores))
                second = rng.randrange(OPENS_S, CLOSES_S)
                events.append(
                    (local_time(stores[store], day, second).astimezone(UTC), -1, store, 0)
                )
        events.sort(key=lambda e: e[0])  # stable: ties keep the order they were made in
        for at, member, store, second in events:
            if member < 0:
                self._sell_online(at)
            else:
                self._order(at, member, store, second, day)

    def _holder(self, buyer: int | None) -> int:
        """Who gets a gift card: the buyer, a regular, or any member."""
        rng = self.rng
        if buyer is not None and rng.randrange(100) < SELF_PERCENT:
            return buyer
        if rng.randrange(2):
            return self.members.pick(rng, 1)[0]
        return rng.randrange(self.chain.members)

    def _issue(self, at: datetime, holder: int) -> int:
        number, amount = self.wallets.sell(self.rng, holder)
        card = card_id(number)
        self._push(
            Operation(
                at,
                "issue_gift_card",
                "POST",
                "/v1/gift-cards",
                f"issue_gift_card:{card}",
                {"id": card, "amount": format_money(amount)},
            )
        )
        return amount

    def _sell_online(self, at: datetime) -> None:
        self._issue(at, self._holder(None))

    def _enroll(self, at: datetime, member: int) -> None:
        self.enrolled[member] = 1
        ref = member_id(member)
        body: dict[str, Any] = {"id": ref}
        contact = self.rng.randrange(100)
        if contact < 75:
            body["email"] = f"{ref}@example.com"
        elif contact < 90:
            body["phone"] = f"+1555{member % 10_000_000:07d}"  # 555: never a real number
        self._push(Operation(at, "enroll", "POST", "/v1/members", f"enroll:{ref}", body))

    def _order(self, at: datetime, member: int, store: int, second: int, day: date) -> None:
        rng = self.rng
        if not self.enrolled[member]:
            self._enroll(at, member)
        self.placed += 1
        order = f"o{self.placed:08d}"
        sold = 0
        if rng.randrange(1000) < IN_STORE_PER_MILLE:
            sold = self._issue(at, self._holder(member))
        bought = basket(rng, self.chain.stores[store], second, sold)
        tenders: list[dict[str, Any]] = []
        paid = None
        if not sold and member in self.wallets.held and rng.randrange(100) < USE_PERCENT:
            paid = self.wallets.spend(member, bought.total)
        if paid is not None:
            card, amount = paid
            self._pay_with_card(at, order, card_id(card), amount)
            tenders.append(
                {"type": "gift_card", "amount": format_money(amount), "gift_card": card_id(card)}
            )
        rest = bought.total - (paid[1] if paid else 0)
        if rest or not tenders:
            kind = "card" if paid else rng.choices(TENDERS, cum_weights=TENDER_CUMULATIVE)[0]
            tenders.append({"type": kind, "amount": format_money(rest)})
        is_open = not sold and paid is None and rng.randrange(100) < OPEN_PERCENT
        local = local_time(self.chain.stores[store], day, second)
        body: dict[str, Any] = {
            "id": order,
            "member": member_id(member),
            "at": local.isoformat(),
            "status": "open" if is_open else "closed",
            **bought.parts,
            "tenders": tenders,
        }
        self._push(Operation(at, "place_order", "POST", "/v1/orders", f"place_order:{order}", body))
        closed = at
        if is_open:
            closed = at + timedelta(seconds=self.later.randint(15 * 60, 75 * 60))
            self._push(
                Operation(
                    closed,
                    "close_order",
                    "POST",
                    f"/v1/orders/{order}/close",
                    f"close_order:{order}",
                    None,
                )
            )
        if not sold and paid is None:  # money back to a gift card is not modelled
            self._follow_ups(order, closed, bought.parts["lines"])

    def _pay_with_card(self, at: datetime, order: str, card: str, amount: int) -> None:
        """Hold what the card pays, then capture it: what a POS does before it closes the order."""
        hold = f"h-{order}"
        self._push(
            Operation(
                at,
                "authorize_gift_card",
                "POST",
                f"/v1/gift-cards/{card}/holds",
                f"authorize_gift_card:{hold}",
                {"amount": format_money(amount), "id": hold},
            )
        )
        self._push(
            Operation(
                at,
                "capture_gift_card",
                "POST",
                f"/v1/gift-cards/holds/{hold}/capture",
                f"capture_gift_card:{hold}",
                {},
            )
        )

    def _follow_ups(self, order: str, closed: datetime, lines: list[dict[str, Any]]) -> None:
        """Voids and refunds of this order, scheduled after it closes."""
        rng = self.later
        pick = rng.randrange(1000)
        if pick < VOID_PER_MILLE:
            at = closed + timedelta(seconds=rng.randint(60, 20 * 60))
            path = f"/v1/orders/{order}/void"
            self._push(Operation(at, "void", "POST", path, f"void:{order}", None))
            return
        if pick >= VOID_PER_MILLE + REFUND_PER_MILLE:
            return
        path = f"/v1/orders/{order}/refunds"
        at = closed + self._refund_delay(rng)
        if rng.randrange(100) < FULL_REFUND_PERCENT:
            self._push(Operation(at, "refund", "POST", path, f"refund:{order}:1", {"all": True}))
            return
        left = {line["id"]: line["qty"] for line in lines}
        for n in (1, 2):
            line = rng.choice([k for k, v in left.items() if v > 0])
            qty = 1 if rng.randrange(100) < 80 else rng.randint(1, left[line])
            left[line] -= qty
            body = {"lines": [{"line": line, "qty": qty}]}
            self._push(Operation(at, "refund", "POST", path, f"refund:{order}:{n}", body))
            if not any(left.values()) or rng.randrange(100) >= SECOND_REFUND_PERCENT:
                return
            at += timedelta(seconds=rng.randint(3600, 3 * 86400))

    @staticmethod
    def _refund_delay(rng: random.Random) -> timedelta:
        if rng.randrange(100) < SAME_DAY_REFUND_PERCENT:
            return timedelta(seconds=min(12 * 3600, 120 + round(rng.expovariate(1 / 5400))))
        return timedelta(seconds=rng.randint(86400, 10 * 86400))
