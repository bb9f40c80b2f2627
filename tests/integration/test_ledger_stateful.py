"""A hypothesis state machine drives the real service layer on a real SQLite file.

Gift cards (issue, reload, redeem, authorize, capture, void, 7-day release), members, closed
orders, refunds, voids and reward redemptions run in random order while time only moves
forward. A model predicts every gift card balance and hold state, and which operations must
fail with which domain error. After every step:

- every ledger transaction's postings sum to zero;
- every ledger account's cached balance equals the sum of its postings;
- no card account is below zero, and each card's balance is the model's;
- each hold is pending, captured, voided or released, resolved at most once, `captured` set
  only when captured, and its hold account holds its amount exactly while it is pending;
- a member's posted balance, when >= 0, equals what is left of their posted lots (and when
  below zero, no posted lot has anything left); nothing is pending once its due work is done.

A step that fails with a domain error (a PunchcardError) must change nothing in the database.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from punchcard.engine.money import format_money
from punchcard.errors import (
    InsufficientFunds,
    InsufficientPoints,
    InvalidInput,
    InvalidState,
    NotFound,
    PunchcardError,
)
from punchcard.ledger.entries import SYSTEM_ACCOUNTS
from punchcard.services.loyalty import Loyalty
from punchcard.services.programs import create_environment
from punchcard.store.database import open_database
from punchcard.store.tables import (
    holds,
    ledger_accounts,
    ledger_postings,
    lots,
    members,
    metadata,
)

from ..conftest import EXAMPLE_PROGRAM

T = TypeVar("T")
CHICAGO = ZoneInfo("America/Chicago")
PROGRAM_TEXT = EXAMPLE_PROGRAM.read_text()
HOLD_LIFETIME = timedelta(days=7)
FIVE_OFF_COST = 500
MAX_EACH = 3  # cards and members per run: steps go to what happens to them
ANY_ERROR = PunchcardError  # an order step whose failure the model does not predict exactly

START = datetime(2026, 3, 3, 9, 0, tzinfo=CHICAGO)  # a Tuesday in the double-tuesday month
PRICES = st.one_of(st.integers(min_value=0, max_value=4_000), st.sampled_from([950, 2_500, 4_000]))
CENTS = st.integers(min_value=1, max_value=5_000)
RARELY = st.integers(min_value=0, max_value=9).map(lambda n: n == 0)  # True one time in ten
STEP = st.integers(min_value=1, max_value=180)  # minutes each step moves the clock
ADVANCE = st.one_of(
    st.integers(min_value=1, max_value=24 * 60),
    # a hold's 7 days, a five-off's 60 days, a lot's 12 months, the new year's tier window
    st.sampled_from([d * 24 * 60 for d in (7, 8, 31, 61, 200, 300)]),
)
ITEMS = [
    {"sku": "BURR", "category": "burrito"},
    {"sku": "TACO", "category": "taco"},
    {"sku": "GUAC", "category": "add_on"},
    {"sku": "BEER", "category": "alcohol"},
    {"sku": "CHIPS", "category": "side"},
    {"sku": "EGIFT", "category": "gift_card", "kind": "gift_card"},
]


@st.composite
def order_parts(draw: st.DrawFn) -> dict[str, Any]:
    """Lines (some with a guac modifier, some alcohol or gift card sales) and discounts."""
    lines = []
    for i in range(draw(st.integers(min_value=1, max_value=3))):
        item = dict(draw(st.sampled_from(ITEMS)))
        line: dict[str, Any] = {
            "id": f"l{i + 1}",
            **item,
            "qty": draw(st.integers(min_value=1, max_value=3)),
            "unit_price": format_money(draw(PRICES)),
        }
        if draw(st.booleans()):
            line["modifiers"] = [
                {"sku": "GUAC", "category": "add_on", "qty": 1, "unit_price": "2.00"}
            ]
        lines.append(line)
    discounts = draw(
        st.lists(
            st.fixed_dictionaries(
                {"amount": st.integers(min_value=1, max_value=3_000).map(format_money)},
                optional={"line": st.sampled_from([line["id"] for line in lines])},
            ),
            max_size=2,
        )
    )
    parts: dict[str, Any] = {"lines": lines}
    if discounts:
        parts["discounts"] = discounts
    return parts


@dataclass
class HoldModel:
    card: str
    amount: int
    expires_at: datetime
    state: str = "pending"


@dataclass
class OrderModel:
    member: str
    lines: dict[str, int]  # line id -> qty
    refunded: dict[str, int] = field(default_factory=dict)
    voided: bool = False

    def fully_refunded(self) -> bool:
        return all(self.refunded.get(line, 0) >= qty for line, qty in self.lines.items())


class LedgerMachine(RuleBasedStateMachine):
    """The service layer of one environment, with a model of its gift cards and orders."""

    cards = Bundle("cards")
    hold_ids = Bundle("holds")
    member_ids = Bundle("members")
    order_ids = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="punchcard-stateful-")
        self.engine = open_database(f"sqlite:///{self.directory}/db.sqlite3")
        self.now = START
        env_id = create_environment(self.engine, "prop", START, clock=START)
        self.app = Loyalty(self.engine, env_id)
        self.app.publish(PROGRAM_TEXT, START)
        self.balances: dict[str, int] = {}  # card alias -> cents (holds taken off)
        self.holds: dict[str, HoldModel] = {}
        self.members: list[str] = []
        self.orders: dict[str, OrderModel] = {}
        self.counter = 0

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.directory, ignore_errors=True)

    @initialize(target=cards)
    def first_card(self) -> str:
        """Every run starts with one card..."""
        return self._issue(1)

    @initialize(target=member_ids)
    def first_member(self) -> str:
        """...and one member."""
        return self._enroll(1)

    # ------------------------------------------------------------------ helpers

    def _name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _tick(self, minutes: int) -> None:
        """Move the clock forward and do all work due by then (holds past 7 days are released)."""
        self.now += timedelta(minutes=minutes)
        self.app.run_due(self.now)
        for hold in self.holds.values():
            if hold.state == "pending" and hold.expires_at <= self.now:
                hold.state = "released"
                self.balances[hold.card] += hold.amount

    def _snapshot(self) -> dict[str, list[Any]]:
        with self.engine.connect() as conn:
            return {
                table.name: [
                    tuple(row)
                    for row in conn.execute(sa.select(table).order_by(*table.primary_key))
                ]
                for table in metadata.sorted_tables
            }

    def _attempt(self, action: Callable[[], T], expected: type[PunchcardError] | None) -> T | None:
        """Run one use case. `expected`: the domain error it must fail with, or None for success.

        A failure must leave the database exactly as it was; after the step, due work runs
        as the scenario runner does.
        """
        before = self._snapshot()
        try:
            result = action()
        except PunchcardError as exc:
            assert expected is not None, f"unexpected {exc.code}: {exc.message}"
            assert isinstance(exc, expected), f"wanted {expected.__name__}, saw {exc.code}: {exc}"
            assert self._snapshot() == before, f"a failed step ({exc.code}) changed the database"
            self.app.run_due(self.now)
            return None
        assert expected is None or expected is ANY_ERROR, (
            f"wanted {expected.__name__}, it succeeded"
        )
        self.app.run_due(self.now)
        return result

    def _funds(
        self, card: str, amount: int, partial: bool
    ) -> tuple[int, type[PunchcardError] | None]:
        balance = self.balances[card]
        approved = min(amount, balance) if partial else (amount if balance >= amount else 0)
        return approved, (InsufficientFunds if approved <= 0 else None)

    # ------------------------------------------------------------------ gift cards

    @precondition(lambda self: len(self.balances) < MAX_EACH)
    @rule(target=cards, step=STEP)
    def issue_card(self, step: int) -> str:
        """Issue a new card with 12.34 on it."""
        return self._issue(step)

    def _issue(self, step: int) -> str:
        self._tick(step)
        alias = self._name("g")
        self._attempt(lambda: self.app.issue_gift_card(alias, {"amount": "12.34"}, self.now), None)
        self.balances[alias] = 1234
        return alias

    @rule(card=cards, step=STEP)
    def issue_taken_alias(self, card: str, step: int) -> None:
        """Issuing a card under an alias in use is invalid_state and changes nothing."""
        self._tick(step)
        self._attempt(
            lambda: self.app.issue_gift_card(card, {"amount": "12.34"}, self.now), InvalidState
        )

    @rule(card=cards, amount=CENTS, step=STEP)
    def reload(self, card: str, amount: int, step: int) -> None:
        """A reload adds its amount."""
        self._tick(step)
        data = {"amount": format_money(amount)}
        self._attempt(lambda: self.app.reload_gift_card(card, data, self.now), None)
        self.balances[card] += amount

    @rule(card=cards, amount=CENTS, partial=st.booleans(), unknown=RARELY, step=STEP)
    def redeem_card(self, card: str, amount: int, partial: bool, unknown: bool, step: int) -> None:
        """Redeem all or nothing, or with `partial` what is there; nothing approved is an error.

        A card alias that names nothing is not_found.
        """
        self._tick(step)
        data = {"amount": format_money(amount), "partial": partial}
        if unknown:
            self._attempt(lambda: self.app.redeem_gift_card("nobody", data, self.now), NotFound)
            return
        approved, error = self._funds(card, amount, partial)
        seen = self._attempt(lambda: self.app.redeem_gift_card(card, data, self.now), error)
        if error is None:
            assert seen == approved
            self.balances[card] -= approved
            assert self.app.gift_card(card).last_approved == approved

    @rule(target=hold_ids, card=cards, amount=CENTS, partial=st.booleans(), step=STEP)
    def authorize(self, card: str, amount: int, partial: bool, step: int) -> Any:
        """Authorize a hold: the approved amount leaves the card until capture, void or release."""
        self._tick(step)
        approved, error = self._funds(card, amount, partial)
        hold = self._name("h")
        data = {"amount": format_money(amount), "partial": partial, "hold": hold}
        seen = self._attempt(lambda: self.app.authorize_gift_card(card, data, self.now), error)
        if error is not None:
            return multiple()
        assert seen == approved
        self.balances[card] -= approved
        self.holds[hold] = HoldModel(card, approved, self.now + HOLD_LIFETIME)
        return hold

    @rule(card=cards, hold=hold_ids, amount=CENTS, step=STEP)
    def authorize_with_a_taken_hold_alias(
        self, card: str, hold: str, amount: int, step: int
    ) -> None:
        """Reusing a hold alias is invalid_state and changes nothing."""
        self._tick(step)
        data = {"amount": format_money(amount), "partial": True, "hold": hold}
        self._attempt(lambda: self.app.authorize_gift_card(card, data, self.now), InvalidState)

    @rule(hold=hold_ids, amount=st.one_of(st.none(), CENTS), step=STEP)
    def capture(self, hold: str, amount: int | None, step: int) -> None:
        """Capture up to the hold (no amount: all of it); the rest returns to the card."""
        self._tick(step)
        model = self.holds[hold]
        take = model.amount if amount is None else amount
        error: type[PunchcardError] | None = None
        if model.state != "pending":
            error = InvalidState
        elif take > model.amount:
            error = InvalidInput
        data = {} if amount is None else {"amount": format_money(amount)}
        seen = self._attempt(lambda: self.app.capture_hold(hold, data, self.now), error)
        if error is None:
            assert seen == take
            model.state = "captured"
            self.balances[model.card] += model.amount - take

    @rule(hold=hold_ids, step=STEP)
    def void_hold(self, hold: str, step: int) -> None:
        """Voiding a pending hold gives all of it back; a resolved hold is invalid_state."""
        self._tick(step)
        model = self.holds[hold]
        error = None if model.state == "pending" else InvalidState
        self._attempt(lambda: self.app.void_hold(hold, self.now), error)
        if error is None:
            model.state = "voided"
            self.balances[model.card] += model.amount

    @rule(minutes=ADVANCE)
    def advance(self, minutes: int) -> None:
        """Time passes: holds older than 7 days are released, lots and rewards may expire."""
        self._tick(minutes)

    # ------------------------------------------------------------------ members and orders

    @precondition(lambda self: len(self.members) < MAX_EACH)
    @rule(target=member_ids, step=STEP)
    def enroll(self, step: int) -> str:
        """Enroll a new member."""
        return self._enroll(step)

    def _enroll(self, step: int) -> str:
        self._tick(step)
        member = self._name("m")
        self._attempt(lambda: self.app.enroll({"member": member}, self.now), None)
        self.members.append(member)
        return member

    @rule(member=member_ids, step=STEP)
    def enroll_again(self, member: str, step: int) -> None:
        """Enrolling a member twice is invalid_state and changes nothing."""
        self._tick(step)
        self._attempt(lambda: self.app.enroll({"member": member}, self.now), InvalidState)

    @rule(
        target=order_ids,
        member=member_ids,
        parts=order_parts(),
        back=st.one_of(st.none(), st.integers(min_value=0, max_value=48 * 60)),
        use_reward=st.booleans(),
        step=STEP,
    )
    def place_order(
        self, member: str, parts: dict[str, Any], back: int | None, use_reward: bool, step: int
    ) -> Any:
        """Place a closed order (maybe back-dated, maybe using a five-off reward)."""
        self._tick(step)
        order = self._name("o")
        data: dict[str, Any] = {"id": order, "member": member, **parts}
        if back is not None:
            data["at"] = (self.now - timedelta(minutes=back)).isoformat()
        expected: type[PunchcardError] | None = None
        if use_reward:
            data["rewards"] = ["five-off"]
            expected = ANY_ERROR  # the member may hold no five-off reward, or nothing it discounts
        placed = [False]

        def place() -> None:
            self.app.place_order(data, self.now)
            placed[0] = True

        self._attempt(place, expected)
        if not placed[0]:
            return multiple()
        self.orders[order] = OrderModel(
            member, {line["id"]: line["qty"] for line in parts["lines"]}
        )
        return order

    @rule(order=order_ids, step=STEP)
    def refund_all(self, order: str, step: int) -> None:
        """Refund what is left of an order; voided is invalid_state, nothing left invalid_input."""
        self._tick(step)
        model = self.orders[order]
        error: type[PunchcardError] | None = None
        if model.voided:
            error = InvalidState
        elif model.fully_refunded():
            error = InvalidInput
        self._attempt(lambda: self.app.refund_order({"order": order, "all": True}, self.now), error)
        if error is None:
            model.refunded = dict(model.lines)

    @rule(order=order_ids, data=st.data(), step=STEP)
    def refund_some(self, order: str, data: st.DataObject, step: int) -> None:
        """Refund some units of one line; more than remain is invalid_input."""
        self._tick(step)
        model = self.orders[order]
        line = data.draw(st.sampled_from(sorted(model.lines)), label="line")
        qty = data.draw(st.integers(min_value=1, max_value=model.lines[line] + 1), label="qty")
        left = model.lines[line] - model.refunded.get(line, 0)
        error: type[PunchcardError] | None = None
        if model.voided:
            error = InvalidState
        elif qty > left:
            error = InvalidInput
        request = {"order": order, "lines": [{"line": line, "qty": qty}]}
        self._attempt(lambda: self.app.refund_order(request, self.now), error)
        if error is None:
            model.refunded[line] = model.refunded.get(line, 0) + qty

    @rule(order=order_ids, step=STEP)
    def void_order(self, order: str, step: int) -> None:
        """Void a closed order (reversed whole); voiding twice is invalid_state."""
        self._tick(step)
        model = self.orders[order]
        error = InvalidState if model.voided else None
        self._attempt(lambda: self.app.void_order({"order": order}, self.now), error)
        model.voided = True

    @rule(member=member_ids, step=STEP)
    def redeem_reward(self, member: str, step: int) -> None:
        """Redeem five-off for 500 posted points; fewer available is insufficient_points."""
        self._tick(step)
        available = self.app.member(member, self.now).available
        error = InsufficientPoints if available < FIVE_OFF_COST else None
        data = {"member": member, "reward": "five-off"}
        self._attempt(lambda: self.app.redeem(data, self.now), error)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def every_transaction_balances(self) -> None:
        """The postings of every ledger transaction sum to zero."""
        with self.engine.connect() as conn:
            unbalanced = conn.execute(
                sa.select(ledger_postings.c.transaction_id, sa.func.sum(ledger_postings.c.amount))
                .group_by(ledger_postings.c.transaction_id)
                .having(sa.func.sum(ledger_postings.c.amount) != 0)
            ).all()
        assert unbalanced == []

    @invariant()
    def cached_balances_equal_postings(self) -> None:
        """Every account's cached balance equals the sum of its postings (a system account
        caches none); no card is below zero."""
        total = sa.func.coalesce(sa.func.sum(ledger_postings.c.amount), 0)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(ledger_accounts.c.name, ledger_accounts.c.balance, total)
                .select_from(
                    ledger_accounts.outerjoin(
                        ledger_postings, ledger_postings.c.account_id == ledger_accounts.c.id
                    )
                )
                .group_by(ledger_accounts.c.id, ledger_accounts.c.name, ledger_accounts.c.balance)
            ).all()
        for name, cached, summed in rows:
            if name in SYSTEM_ACCOUNTS:
                assert cached is None, f"system account {name} caches {cached}"
                continue
            assert cached == summed, f"account {name}: cached {cached}, postings sum to {summed}"
            if name.startswith("card:"):
                assert cached >= 0, f"card account {name} is below zero: {cached}"

    @invariant()
    def card_balances_match_the_model(self) -> None:
        """Each card's balance (holds taken off) is what the model says."""
        for alias, cents in self.balances.items():
            assert self.app.gift_card(alias).balance == cents, alias

    @invariant()
    def holds_resolve_at_most_once(self) -> None:
        """Each hold is in a known state, resolved at most once, and its account matches it."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(holds)).all()
            accounts = dict(
                conn.execute(
                    sa.select(ledger_accounts.c.name, ledger_accounts.c.balance).where(
                        ledger_accounts.c.name.like("hold:%")
                    )
                ).all()
            )
        assert {row.external_id for row in rows} == set(self.holds)
        for row in rows:
            assert row.state in ("pending", "captured", "voided", "released"), row.state
            assert row.state == self.holds[row.external_id].state, row.external_id
            assert (row.captured is not None) == (row.state == "captured"), row.external_id
            assert (row.resolved_at is None) == (row.state == "pending"), row.external_id
            if row.captured is not None:
                assert 0 < row.captured <= row.amount
            held = accounts.get(f"hold:{row.id}", 0)
            assert held == (row.amount if row.state == "pending" else 0), row.external_id

    @invariant()
    def posted_balance_matches_lots(self) -> None:
        """Posted >= 0 equals what is left of the member's posted lots; below zero, nothing is left.

        With accrual_delay PT0S and due work done after every step, nothing stays pending.
        """
        with self.engine.connect() as conn:
            left = dict(
                conn.execute(
                    sa.select(
                        members.c.external_id, sa.func.coalesce(sa.func.sum(lots.c.remaining), 0)
                    )
                    .select_from(
                        members.outerjoin(
                            lots, (lots.c.member_id == members.c.id) & (lots.c.state == "posted")
                        )
                    )
                    .group_by(members.c.external_id)
                ).all()
            )
        for member in self.members:
            view = self.app.member(member, self.now)
            if view.posted >= 0:
                assert view.posted == left[member], (
                    f"{member}: posted {view.posted}, lots {left[member]}"
                )
            else:
                assert left[member] == 0, (
                    f"{member}: in debt {view.posted} with {left[member]} in lots"
                )
            assert view.pending == 0, f"{member}: {view.pending} points still pending"


LedgerMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
TestLedgerStateful = LedgerMachine.TestCase
