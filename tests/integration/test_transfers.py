"""Transfers between gift cards and between members, and snapshot reads of many balances."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from punchcard.audit import run_audit
from punchcard.errors import (
    InsufficientFunds,
    InsufficientPoints,
    InvalidInput,
    InvalidState,
    NotFound,
)
from punchcard.ledger.lots import add_months
from punchcard.services import gift_cards
from punchcard.services.loyalty import Loyalty
from punchcard.store.tables import (
    ledger_accounts,
    ledger_postings,
    ledger_transactions,
    lots,
    members,
    outbox,
)
from punchcard.store.uow import UnitOfWork

from ..conftest import EXAMPLE_PROGRAM
from .helpers import START, burritos, new_app

ZONE = ZoneInfo("America/Chicago")


def _entries(engine: sa.Engine, kind: str) -> list[tuple[str, list[tuple[str, int]]]]:
    """(reference, [(account, amount), ...]) of each ledger transaction of one kind."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                ledger_transactions.c.reference, ledger_accounts.c.name, ledger_postings.c.amount
            )
            .join(ledger_postings, ledger_postings.c.transaction_id == ledger_transactions.c.id)
            .join(ledger_accounts, ledger_accounts.c.id == ledger_postings.c.account_id)
            .where(ledger_transactions.c.kind == kind)
            .order_by(ledger_transactions.c.id, ledger_postings.c.id)
        ).all()
    found: dict[str, list[tuple[str, int]]] = {}
    for r in rows:
        found.setdefault(r.reference, []).append((r.name, r.amount))
    return list(found.items())


def _events(engine: sa.Engine, kind: str) -> list[tuple[int | None, dict[str, object]]]:
    with engine.connect() as conn:
        return [
            (r.member_id, r.payload)
            for r in conn.execute(
                sa.select(outbox.c.member_id, outbox.c.payload)
                .where(outbox.c.type == kind)
                .order_by(outbox.c.id)
            )
        ]


def _member_pk(engine: sa.Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(members.c.id).where(members.c.external_id == name)).scalar_one()
        )


def _lots(engine: sa.Engine, name: str) -> list[tuple[str, int, int, object]]:
    """(state, amount, remaining, expires_at) of a member's lots, oldest first."""
    with engine.connect() as conn:
        return [
            (r.state, r.amount, r.remaining, r.expires_at)
            for r in conn.execute(
                sa.select(lots)
                .where(lots.c.member_id == _member_pk(engine, name))
                .order_by(lots.c.posted_at, lots.c.id)
            )
        ]


def _audit_clean(engine: sa.Engine, app: Loyalty, now: datetime) -> None:
    failed = [(f.check, f.violations) for f in run_audit(engine, now) if not f.ok]
    assert failed == []


# Gift cards -----------------------------------------------------------------------------


def test_a_gift_card_transfer_moves_money_in_one_balanced_entry(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "50.00"}, START)
    app.issue_gift_card("g2", {"amount": "10.00"}, START)
    moved = app.transfer_gift_card("g1", {"to": "g2", "amount": "20.00"}, START)
    assert (moved.source, moved.target, moved.amount) == ("g1", "g2", 2000)
    assert moved.id.startswith("tr_")
    assert (app.gift_card("g1").balance, app.gift_card("g2").balance) == (3000, 3000)
    # All of it, to the cent, is allowed too.
    app.transfer_gift_card("g1", {"to": "g2", "amount": "30.00"}, START)
    assert (app.gift_card("g1").balance, app.gift_card("g2").balance) == (0, 6000)
    entries = _entries(engine, "transfer")
    assert entries[0] == (f"transfer:{moved.id}", [("card:1", -2000), ("card:2", 2000)])
    assert len(entries) == 2
    assert _events(engine, "gift_card.transferred")[0] == (
        None,
        {
            "transfer": moved.id,
            "amount": "20.00",
            "currency": "USD",
            "from": {"card": "g1", "balance": "30.00"},
            "to": {"card": "g2", "balance": "30.00"},
        },
    )
    _audit_clean(engine, app, START)


def test_the_audit_names_a_transfer_that_touches_a_system_account(engine: sa.Engine) -> None:
    from punchcard.ledger import store as ledger
    from punchcard.ledger.entries import SPENT, money_asset, transfer

    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "5.00"}, START)
    with engine.begin() as conn:  # a bug above the ledger: a "transfer" that spends
        entry = transfer(money_asset("USD"), "transfer", "card:1", SPENT, 100, "transfer:bad")
        ledger.write(conn, app.env_id, entry, START)
    broken = {f.check: f.violations for f in run_audit(engine, START)}
    assert broken["every transfer moves value between two cards or two members"] == [
        "transfer transfer:bad moves [('card:1', -100), ('spent', 100)]"
    ]


def test_a_gift_card_transfer_refuses_what_the_card_can_not_cover(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "50.00"}, START)
    app.issue_gift_card("g2", {"amount": "10.00"}, START)
    with pytest.raises(InsufficientFunds, match=r"has 50\.00, 50\.01 asked"):
        app.transfer_gift_card("g1", {"to": "g2", "amount": "50.01"}, START)
    app.authorize_gift_card("g1", {"amount": "40.00", "hold": "h1"}, START)
    with pytest.raises(
        InsufficientFunds, match=r"has 10\.00, 10\.01 asked"
    ):  # holds come off first
        app.transfer_gift_card("g1", {"to": "g2", "amount": "10.01"}, START)
    assert (app.gift_card("g1").balance, app.gift_card("g2").balance) == (1000, 1000)
    assert _entries(engine, "transfer") == []
    assert _events(engine, "gift_card.transferred") == []


@pytest.mark.parametrize(
    ("source", "body", "error", "message"),
    [
        ("g1", {"to": "g1", "amount": "1.00"}, InvalidInput, "two different cards"),
        ("g1", {"to": "g2", "amount": "0.00"}, InvalidInput, "above zero"),
        ("g1", {"to": "g2", "amount": "-1.00"}, InvalidInput, "amount"),
        ("g1", {"to": "g2", "amount": "1.001"}, InvalidInput, "amount"),
        ("g1", {"to": "g2"}, InvalidInput, "amount is required"),
        ("g1", {"amount": "1.00"}, InvalidInput, "to"),
        ("nope", {"to": "g2", "amount": "1.00"}, NotFound, "no gift card 'nope'"),
        ("g1", {"to": "nope", "amount": "1.00"}, NotFound, "no gift card 'nope'"),
        # Malformed input wins over not_found; not_found over the balance.
        ("nope", {"to": "nope", "amount": "1.00"}, InvalidInput, "two different cards"),
        ("g1", {"to": "nope", "amount": "999.00"}, NotFound, "no gift card 'nope'"),
    ],
)
def test_a_gift_card_transfer_names_what_is_wrong(
    engine: sa.Engine, source: str, body: dict[str, str], error: type[Exception], message: str
) -> None:
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "5.00"}, START)
    app.issue_gift_card("g2", {"amount": "5.00"}, START)
    with pytest.raises(error, match=message):
        app.transfer_gift_card(source, body, START)
    assert (app.gift_card("g1").balance, app.gift_card("g2").balance) == (500, 500)


def test_cards_of_different_currencies_do_not_transfer(engine: sa.Engine) -> None:
    app = new_app(engine)
    app.issue_gift_card("usd", {"amount": "5.00"}, START)
    later = START + timedelta(days=1)
    app.publish(EXAMPLE_PROGRAM.read_text().replace("currency: USD", "currency: EUR"), later)
    app.issue_gift_card("eur", {"amount": "5.00"}, later)
    with pytest.raises(InvalidState, match="usd holds USD and eur holds EUR"):
        app.transfer_gift_card("usd", {"to": "eur", "amount": "1.00"}, later)


def test_a_card_locked_against_pin_guessing_still_transfers_like_it_redeems(
    engine: sa.Engine,
) -> None:
    """The PIN lockout guards guest inquiries by number; keyed operations name the card."""
    app = new_app(engine)
    app.issue_gift_card("g1", {"amount": "5.00"}, START)
    app.issue_gift_card("g2", {"amount": "5.00"}, START)
    with engine.connect() as conn:
        number = conn.execute(sa.text("SELECT number FROM gift_cards WHERE external_id = 'g1'"))
        card_number = number.scalar_one()
    for _ in range(5):
        with UnitOfWork(engine, app.env_id) as uow, pytest.raises(NotFound):
            gift_cards.inquire(uow, card_number, "0000x", START)
    app.redeem_gift_card("g1", {"amount": "1.00"}, START)
    app.transfer_gift_card("g1", {"to": "g2", "amount": "1.00"}, START)
    assert (app.gift_card("g1").balance, app.gift_card("g2").balance) == (300, 600)


def test_opposite_gift_card_transfers_racing_conserve_money_and_never_deadlock(
    engine: sa.Engine,
) -> None:
    app = new_app(engine)
    for card in ("g1", "g2", "g3"):
        app.issue_gift_card(card, {"amount": "30.00"}, START)
    pairs = [("g1", "g2"), ("g2", "g1"), ("g2", "g3"), ("g3", "g1"), ("g1", "g3"), ("g3", "g2")]

    def run(worker: int) -> int:
        done = 0
        for step in range(12):
            source, target = pairs[(worker + step) % len(pairs)]
            try:
                app.transfer_gift_card(source, {"to": target, "amount": "7.00"}, START)
                done += 1
            except InsufficientFunds:
                pass
        return done

    with ThreadPoolExecutor(max_workers=6) as pool:
        done = sum(pool.map(run, range(6)))
    balances = [app.gift_card(card).balance for card in ("g1", "g2", "g3")]
    assert sum(balances) == 9000 and min(balances) >= 0
    assert len(_entries(engine, "transfer")) == done > 0
    _audit_clean(engine, app, START)


# Points ---------------------------------------------------------------------------------


def _earning_app(engine: sa.Engine, program: str | None = None) -> Loyalty:
    """ann earns 300 points at START and 200 a month later; bob and carl have none."""
    app = new_app(engine, program)
    for name in ("ann", "bob", "carl"):
        app.enroll({"member": name}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)
    app.run_due(START)
    app.place_order(
        burritos("o2", "ann", qty=2, at=START + timedelta(days=31)), START + timedelta(days=31)
    )
    app.run_due(START + timedelta(days=31))
    return app


def test_a_points_transfer_takes_the_oldest_lots_and_they_keep_their_expiry(
    engine: sa.Engine,
) -> None:
    app = _earning_app(engine)
    now = START + timedelta(days=40)
    first, second = add_months(START, 12, ZONE), add_months(START + timedelta(days=31), 12, ZONE)
    moved = app.transfer_points({"member": "ann", "to": "bob", "points": 400}, now)
    assert (moved.points, moved.paid_debt) == (400, 0)
    assert (app.member("ann", now).posted, app.member("bob", now).posted) == (100, 400)
    assert _lots(engine, "ann") == [("spent", 300, 0, first), ("posted", 200, 100, second)]
    assert _lots(engine, "bob") == [("posted", 300, 300, first), ("posted", 100, 100, second)]
    # Transferred points are not earned: no tier progress, at either end.
    with engine.connect() as conn:
        progress: dict[str, int] = dict(
            conn.execute(sa.select(members.c.external_id, members.c.progress)).all()
        )
    assert progress == {"ann": 500, "bob": 0, "carl": 0}
    assert _entries(engine, "transfer") == [
        (f"transfer:{moved.id}", [("member:1", -400), ("member:2", 400)])
    ]
    payload = {"transfer": moved.id, "from": "ann", "to": "bob", "points": 400}
    assert _events(engine, "points.transferred") == [
        (_member_pk(engine, "ann"), payload),
        (_member_pk(engine, "bob"), {**payload, "paid_debt": 0}),
    ]
    # Each part expires when it would have at ann: 300 a year after START, 100 a month later.
    app.run_due(first)
    assert (app.member("ann", first).posted, app.member("bob", first).posted) == (100, 100)
    app.run_due(second)
    assert (app.member("ann", second).posted, app.member("bob", second).posted) == (0, 0)
    _audit_clean(engine, app, second)


def test_received_points_pay_a_debt_first(engine: sa.Engine) -> None:
    app = _earning_app(engine)
    now = START + timedelta(days=40)
    app.place_order(burritos("o3", "carl", qty=6), now)  # 600 points
    app.run_due(now)
    app.redeem({"member": "carl", "reward": "five-off"}, now)  # 100 left
    app.refund_order({"order": "o3", "all": True}, now)  # 600 back: 100 from the lot, 500 owed
    assert app.member("carl", now).posted == -500
    moved = app.transfer_points({"member": "ann", "to": "carl", "points": 350}, now)
    assert moved.paid_debt == 350
    assert (app.member("ann", now).posted, app.member("carl", now).posted) == (150, -150)
    # The parts that paid the debt are spent lots (in the order they were earned at ann's).
    assert [lot[:3] for lot in _lots(engine, "carl")] == [
        ("spent", 300, 0),
        ("spent", 50, 0),
        ("spent", 600, 0),
    ]
    moved = app.transfer_points({"member": "ann", "to": "carl", "points": 150}, now)
    assert moved.paid_debt == 150
    assert app.member("carl", now).posted == 0
    with pytest.raises(InsufficientPoints, match="carl has 0 points available, 1 asked"):
        app.transfer_points({"member": "carl", "to": "ann", "points": 1}, now)
    _audit_clean(engine, app, now)


def test_received_points_beyond_a_debt_form_lots_that_keep_their_expiry(
    engine: sa.Engine,
) -> None:
    app = _earning_app(engine)
    now = START + timedelta(days=40)
    app.place_order(burritos("o3", "carl", qty=6), now)
    app.run_due(now)
    app.redeem({"member": "carl", "reward": "five-off"}, now)
    app.refund_order({"order": "o3", "all": True}, now)  # carl owes 500
    app.place_order(burritos("o4", "ann", qty=1), now)  # ann: lots of 300, 200 and 100
    app.run_due(now)
    moved = app.transfer_points({"member": "ann", "to": "carl", "points": 550}, now)
    # The 300 and the 200 pay the debt; 50 of the newest lot is carl's, expiring with it.
    assert moved.paid_debt == 500
    assert (app.member("ann", now).posted, app.member("carl", now).posted) == (50, 50)
    assert _lots(engine, "carl") == [  # oldest first, by when each part was earned
        ("spent", 300, 0, add_months(START, 12, ZONE)),
        ("spent", 200, 0, add_months(START + timedelta(days=31), 12, ZONE)),
        ("spent", 600, 0, add_months(now, 12, ZONE)),  # carl's own, clawed back
        ("posted", 50, 50, add_months(now, 12, ZONE)),
    ]
    _audit_clean(engine, app, now)


def test_pending_points_are_not_transferable(engine: sa.Engine) -> None:
    program = EXAMPLE_PROGRAM.read_text().replace("accrual_delay: PT0S", "accrual_delay: P1D")
    app = new_app(engine, program)
    app.enroll({"member": "ann"}, START)
    app.enroll({"member": "bob"}, START)
    app.place_order(burritos("o1", "ann", qty=3), START)
    assert (app.member("ann", START).posted, app.member("ann", START).pending) == (0, 300)
    with pytest.raises(InsufficientPoints, match="ann has 0 points available, 1 asked"):
        app.transfer_points({"member": "ann", "to": "bob", "points": 1}, START)
    later = START + timedelta(days=1)
    app.run_due(later)
    app.transfer_points({"member": "ann", "to": "bob", "points": 300}, later)
    assert (app.member("ann", later).posted, app.member("bob", later).posted) == (0, 300)


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({"member": "ann", "to": "ann", "points": 1}, InvalidInput, "two different members"),
        ({"member": "ann", "to": "bob", "points": 0}, InvalidInput, "points: a whole number"),
        ({"member": "ann", "to": "bob", "points": -5}, InvalidInput, "points: a whole number"),
        ({"member": "ann", "to": "bob", "points": True}, InvalidInput, "points: a whole number"),
        ({"member": "ann", "to": "bob", "points": 1.0}, InvalidInput, "points: a whole number"),
        ({"member": "ann", "to": "bob", "points": "5"}, InvalidInput, "points: a whole number"),
        ({"member": "ann", "to": "bob"}, InvalidInput, "points: a whole number"),
        ({"member": "ann", "points": 5}, InvalidInput, "to"),
        ({"member": "ann", "to": "nope", "points": 5}, NotFound, "no member 'nope'"),
        ({"member": "nope", "to": "ann", "points": 5}, NotFound, "no member 'nope'"),
        ({"member": "ann", "to": "nope", "points": 9999}, NotFound, "no member 'nope'"),
        ({"member": "ann", "to": "bob", "points": 501}, InsufficientPoints, "500 points available"),
    ],
)
def test_a_points_transfer_names_what_is_wrong(
    engine: sa.Engine, body: dict[str, object], error: type[Exception], message: str
) -> None:
    app = _earning_app(engine)
    now = START + timedelta(days=40)
    with pytest.raises(error, match=message):
        app.transfer_points(body, now)
    assert (app.member("ann", now).posted, app.member("bob", now).posted) == (500, 0)
    assert _entries(engine, "transfer") == []


def test_opposite_points_transfers_racing_conserve_points_and_never_deadlock(
    engine: sa.Engine,
) -> None:
    app = _earning_app(engine)
    now = START + timedelta(days=40)
    app.transfer_points({"member": "ann", "to": "bob", "points": 200}, now)
    app.transfer_points({"member": "ann", "to": "carl", "points": 150}, now)
    pairs = [("ann", "bob"), ("bob", "ann"), ("bob", "carl"), ("carl", "ann"), ("ann", "carl")]

    def run(worker: int) -> int:
        done = 0
        for step in range(12):
            source, target = pairs[(worker + step) % len(pairs)]
            try:
                app.transfer_points({"member": source, "to": target, "points": 70}, now)
                done += 1
            except InsufficientPoints:
                pass
        return done

    with ThreadPoolExecutor(max_workers=6) as pool:
        done = sum(pool.map(run, range(6)))
    balances = [app.member(m, now).posted for m in ("ann", "bob", "carl")]
    assert sum(balances) == 500 and min(balances) >= 0
    assert len(_entries(engine, "transfer")) == done + 2
    _audit_clean(engine, app, now)


# Snapshot reads -------------------------------------------------------------------------


def test_balances_of_members_and_cards_read_together(engine: sa.Engine) -> None:
    app = _earning_app(engine)
    now = START + timedelta(days=40)
    app.issue_gift_card("g1", {"amount": "12.34"}, now)
    app.issue_gift_card("g2", {"amount": "0.66"}, now)
    people, cards = app.balances(["bob", "ann", "bob"], ["g2", "g1"], now)
    assert [(v.member, v.posted) for v in people] == [("bob", 0), ("ann", 500), ("bob", 0)]
    assert [(v.card, v.balance, v.currency) for v in cards] == [
        ("g2", 66, "USD"),
        ("g1", 1234, "USD"),
    ]
    with pytest.raises(NotFound, match="no member 'nope'"):
        app.balances(["ann", "nope"], [], now)
    with pytest.raises(NotFound, match="no gift card 'nope'"):
        app.balances([], ["g1", "nope"], now)
    assert gift_cards.names(["a", "b", "a"], "gift_card") == ["a", "b"]
    with pytest.raises(InvalidInput, match="at most 100 ids, 101 given"):
        gift_cards.names([str(i) for i in range(101)], "gift_card")
    with pytest.raises(InvalidInput, match="one or more ids"):
        gift_cards.names([], "member")


def test_the_ledger_writes_new_and_existing_accounts_and_one_named_twice(
    engine: sa.Engine,
) -> None:
    """A ledger transaction moves existing accounts, makes new ones on first use, and takes an
    account named in two legs as two postings; each balance returned is the balance after."""
    from punchcard.ledger import store as ledger
    from punchcard.ledger.entries import Entry

    app = new_app(engine)
    with engine.begin() as conn:
        first = ledger.write(conn, app.env_id, Entry("points:x", "t", (("a", -5), ("b", 5))), START)
        mixed = ledger.write(
            conn, app.env_id, Entry("points:x", "t", (("b", -3), ("c", 2), ("a", 1))), START
        )
        twice = ledger.write(
            conn, app.env_id, Entry("points:x", "t", (("c", -2), ("c", 7), ("a", -5))), START
        )
    assert first == {"a": -5, "b": 5}
    assert mixed == {"b": 2, "c": 2, "a": -4}
    assert twice["a"] == -9 and twice["c"] == 7
    with engine.connect() as conn:
        balances = dict(
            conn.execute(
                sa.select(ledger_accounts.c.name, ledger_accounts.c.balance).where(
                    ledger_accounts.c.asset == "points:x"
                )
            ).all()
        )
        legs = conn.execute(
            sa.select(
                ledger_postings.c.transaction_id, ledger_accounts.c.name, ledger_postings.c.amount
            )
            .join(ledger_accounts, ledger_accounts.c.id == ledger_postings.c.account_id)
            .where(ledger_accounts.c.asset == "points:x")
        ).all()
    assert balances == {"a": -9, "b": 2, "c": 7}
    by_transaction: dict[int, list[tuple[str, int]]] = {}
    for txn, name, amount in legs:
        by_transaction.setdefault(txn, []).append((name, amount))
    assert sorted(sorted(t) for t in by_transaction.values()) == [
        [("a", -5), ("b", 5)],
        [("a", -5), ("c", -2), ("c", 7)],
        [("a", 1), ("b", -3), ("c", 2)],
    ]
