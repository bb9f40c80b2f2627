"""Gift cards: stored value in a currency, with two-phase holds resolved at most once (rule 13).

Money moves only by balanced ledger entries: issue and reload from `issued` to the card,
redeem from the card to `spent`, authorize from the card to the hold, capture from the
hold to `spent` (the rest back to the card), void and release from the hold to the card,
transfer from one card to another (both locked in id order, so two opposite transfers
never deadlock). A card's balance is its account's balance, holds already taken off.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from punchcard.engine.money import MoneyFormatError, format_money, parse_money
from punchcard.errors import InsufficientFunds, InvalidInput, InvalidState, NotFound
from punchcard.ledger import store as ledger
from punchcard.ledger.entries import ISSUED, SPENT, Entry, money_asset, transfer
from punchcard.lifecycle.machines import HOLD
from punchcard.services import cards
from punchcard.services.context import version_at
from punchcard.services.inputs import as_name
from punchcard.store.tables import gift_cards, holds, ledger_accounts
from punchcard.store.uow import Event, UnitOfWork

HOLD_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class GiftCardView:
    card: str
    currency: str
    balance: int  # minor units, holds taken off
    last_approved: int | None


def _amount(data: Mapping[str, Any], required: bool = True) -> int | None:
    if "amount" not in data or data["amount"] is None:
        if required:
            raise InvalidInput("amount is required")
        return None
    try:
        cents = parse_money(data["amount"])
    except MoneyFormatError as exc:
        raise InvalidInput(f"amount: {exc}") from exc
    if cents <= 0:
        raise InvalidInput("amount: must be above zero")
    if cents > 10**12:
        raise InvalidInput("amount: too large")
    return cents


def _card(uow: UnitOfWork, alias: Any) -> Any:
    alias = as_name(alias, "gift card")
    row = uow.conn.execute(
        sa.select(gift_cards)
        .where(gift_cards.c.env_id == uow.env_id, gift_cards.c.external_id == alias)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"no gift card {alias!r}")
    return row


def _account(card_id: int) -> str:
    return f"card:{card_id}"


def _balance(uow: UnitOfWork, card: Any) -> int:
    return ledger.balance(uow.conn, uow.env_id, money_asset(card.currency), _account(card.id))


def _changed(uow: UnitOfWork, card: Any, what: str, amount: int, at: datetime) -> None:
    uow.record(
        Event(
            "gift_card.changed",
            at,
            {
                "card": card.external_id,
                "change": what,
                "amount": format_money(amount),
                "balance": format_money(_balance(uow, card)),
                "currency": card.currency,
            },
        )
    )


@dataclass(frozen=True)
class IssuedCard:
    card: str
    number: str
    pin: str  # shown once, stored only as a salted hash


def issue(uow: UnitOfWork, alias: Any, data: Mapping[str, Any], now: datetime) -> IssuedCard:
    amount = _amount(data)
    assert amount is not None
    alias = f"gc_{uuid.uuid4().hex[:16]}" if alias is None else as_name(alias, "gift card")
    taken = uow.conn.execute(
        sa.select(gift_cards.c.id).where(
            gift_cards.c.env_id == uow.env_id, gift_cards.c.external_id == alias
        )
    ).first()
    if taken is not None:
        raise InvalidState(f"gift card {alias!r} exists already")
    currency = version_at(uow, now).program.currency
    number, pin = cards.new_number(), cards.new_pin()
    card_id = uow.conn.execute(
        sa.insert(gift_cards)
        .values(
            env_id=uow.env_id,
            external_id=alias,
            currency=currency,
            created_at=now,
            number=number,
            pin_hash=cards.hash_pin(pin),
            pin_failures=0,
        )
        .returning(gift_cards.c.id)
    ).scalar_one()
    card = uow.conn.execute(sa.select(gift_cards).where(gift_cards.c.id == card_id)).one()
    _move(
        uow,
        transfer(money_asset(currency), "issue", ISSUED, _account(card_id), amount, alias),
        now,
    )
    _changed(uow, card, "issued", amount, now)
    return IssuedCard(alias, number, pin)


def reload(uow: UnitOfWork, alias: Any, data: Mapping[str, Any], now: datetime) -> None:
    amount = _amount(data)
    assert amount is not None
    card = _card(uow, alias)
    _move(
        uow,
        transfer(money_asset(card.currency), "reload", ISSUED, _account(card.id), amount, alias),
        now,
    )
    _changed(uow, card, "reloaded", amount, now)


@dataclass(frozen=True)
class Transfer:
    id: str  # also the ledger reference, transfer:<id>
    source: str
    target: str
    amount: int  # minor units


def transfer_value(uow: UnitOfWork, alias: Any, data: Mapping[str, Any], now: datetime) -> Transfer:
    """Move money from one card to another of the same currency, all or nothing."""
    amount = _amount(data)
    assert amount is not None
    source = as_name(alias, "gift card")
    target = as_name(data.get("to"), "to")
    if source == target:
        raise InvalidInput("to: a transfer moves money between two different cards")
    found = {
        row.external_id: row.id
        for row in uow.conn.execute(
            sa.select(gift_cards.c.id, gift_cards.c.external_id).where(
                gift_cards.c.env_id == uow.env_id, gift_cards.c.external_id.in_([source, target])
            )
        ).all()
    }
    for name in (source, target):
        if name not in found:
            raise NotFound(f"no gift card {name!r}")
    # Both rows locked in id order: two transfers in opposite directions never deadlock.
    locked = {
        row.external_id: row
        for row in (
            uow.conn.execute(
                sa.select(gift_cards).where(gift_cards.c.id == card_id).with_for_update()
            ).one()
            for card_id in sorted(found.values())
        )
    }
    src, dst = locked[source], locked[target]
    if src.currency != dst.currency:
        raise InvalidState(
            f"gift card {source} holds {src.currency} and {target} holds {dst.currency}"
        )
    _approve(uow, src, amount, partial=False)
    moved = Transfer(f"tr_{uuid.uuid4().hex[:20]}", source, target, amount)
    _move(
        uow,
        transfer(
            money_asset(src.currency),
            "transfer",
            _account(src.id),
            _account(dst.id),
            amount,
            f"transfer:{moved.id}",
        ),
        now,
    )
    uow.record(
        Event(
            "gift_card.transferred",
            now,
            {
                "transfer": moved.id,
                "amount": format_money(amount),
                "currency": src.currency,
                "from": {"card": source, "balance": format_money(_balance(uow, src))},
                "to": {"card": target, "balance": format_money(_balance(uow, dst))},
            },
        )
    )
    return moved


def _approve(uow: UnitOfWork, card: Any, amount: int, partial: bool) -> int:
    balance = _balance(uow, card)
    approved = min(amount, balance) if partial else (amount if balance >= amount else 0)
    if approved <= 0:
        raise InsufficientFunds(
            f"gift card {card.external_id} has {format_money(balance)}, {format_money(amount)} asked"
        )
    return approved


def redeem(uow: UnitOfWork, alias: Any, data: Mapping[str, Any], now: datetime) -> int:
    """Take money off a card: all or nothing, or with `partial` what is there."""
    amount = _amount(data)
    assert amount is not None
    card = _card(uow, alias)
    approved = _approve(uow, card, amount, bool(data.get("partial")))
    _move(
        uow,
        transfer(money_asset(card.currency), "redeem", _account(card.id), SPENT, approved, alias),
        now,
    )
    _set_last(uow, card, approved)
    _changed(uow, card, "redeemed", approved, now)
    return approved


def authorize(uow: UnitOfWork, alias: Any, data: Mapping[str, Any], now: datetime) -> int:
    """Hold money on a card until it is captured, voided, or released after 7 days."""
    amount = _amount(data)
    assert amount is not None
    hold_alias = None if data.get("hold") is None else as_name(data["hold"], "hold")
    card = _card(uow, alias)
    if hold_alias is not None and _hold(uow, hold_alias, lock=False, missing_ok=True) is not None:
        raise InvalidState(f"hold {hold_alias!r} exists already")
    approved = _approve(uow, card, amount, bool(data.get("partial")))
    hold_id = uow.conn.execute(
        sa.insert(holds)
        .values(
            env_id=uow.env_id,
            external_id=hold_alias or f"hold-{uuid.uuid4().hex}",
            card_id=card.id,
            amount=approved,
            state="pending",
            created_at=now,
            expires_at=now + HOLD_LIFETIME,
        )
        .returning(holds.c.id)
    ).scalar_one()
    asset = money_asset(card.currency)
    _move(
        uow,
        transfer(asset, "authorize", _account(card.id), f"hold:{hold_id}", approved, alias),
        now,
    )
    _set_last(uow, card, approved)
    _changed(uow, card, "authorized", approved, now)
    return approved


def capture(uow: UnitOfWork, hold_alias: Any, data: Mapping[str, Any], now: datetime) -> int:
    """Capture up to the hold (no amount: all of it); the rest goes back to the card."""
    amount = _amount(data, required=False)
    hold = _hold(uow, hold_alias)
    HOLD.target(_state(hold, now), "capture", hold.external_id)
    take = hold.amount if amount is None else amount
    if take > hold.amount:
        raise InvalidInput(
            f"capture {format_money(take)} is more than the hold of {format_money(hold.amount)}"
        )
    card = uow.conn.execute(
        sa.select(gift_cards).where(gift_cards.c.id == hold.card_id).with_for_update()
    ).one()
    postings = [(f"hold:{hold.id}", -hold.amount), (SPENT, take)]
    if hold.amount - take:
        postings.append((_account(card.id), hold.amount - take))
    _move(
        uow,
        Entry(money_asset(card.currency), "capture", tuple(postings), hold.external_id),
        now,
    )
    _resolve(uow, hold, "captured", now, captured=take)
    _changed(uow, card, "captured", take, now)
    return take


def void(uow: UnitOfWork, hold_alias: Any, now: datetime) -> None:
    hold = _hold(uow, hold_alias)
    HOLD.target(_state(hold, now), "void", hold.external_id)
    _release(uow, hold, "void", "voided", now)


def _state(hold: Any, now: datetime) -> str:
    """A pending hold is released at its expiry (rule 14: what expires at T can not be used
    at T), so it is refused as a released one even before the due work releases it. The
    release itself is left to that work: a refusal rolls its transaction back."""
    if hold.state == "pending" and hold.expires_at <= now:
        return "released"
    return str(hold.state)


def release_expired(uow: UnitOfWork, hold_id: int, at: datetime) -> None:
    """Due work: a hold not captured within 7 days is released."""
    hold = uow.conn.execute(sa.select(holds).where(holds.c.id == hold_id).with_for_update()).one()
    if hold.state == "pending" and hold.expires_at <= at:
        _release(uow, hold, "7 days pass", "released", at)


def _release(uow: UnitOfWork, hold: Any, event: str, state: str, now: datetime) -> None:
    HOLD.target(hold.state, event, hold.external_id)
    card = uow.conn.execute(
        sa.select(gift_cards).where(gift_cards.c.id == hold.card_id).with_for_update()
    ).one()
    asset = money_asset(card.currency)
    _move(
        uow,
        transfer(asset, state, f"hold:{hold.id}", _account(card.id), hold.amount, hold.external_id),
        now,
    )
    _resolve(uow, hold, state, now)
    _changed(uow, card, state, hold.amount, now)


def _resolve(
    uow: UnitOfWork, hold: Any, state: str, now: datetime, captured: int | None = None
) -> None:
    # `state = 'pending'` in the WHERE makes resolving at most once hold even under a race.
    done = uow.conn.execute(
        sa.update(holds)
        .where(holds.c.id == hold.id, holds.c.state == "pending")
        .values(state=state, resolved_at=now, captured=captured)
    ).rowcount
    if done != 1:
        raise InvalidState(f"hold {hold.external_id} is already resolved")


def _hold(uow: UnitOfWork, alias: Any, *, lock: bool = True, missing_ok: bool = False) -> Any:
    alias = as_name(alias, "hold")
    query = sa.select(holds).where(holds.c.env_id == uow.env_id, holds.c.external_id == alias)
    row = uow.conn.execute(query.with_for_update() if lock else query).first()
    if row is None and not missing_ok:
        raise NotFound(f"no hold {alias!r}")
    return row


def _move(uow: UnitOfWork, entry: Entry, now: datetime) -> None:
    ledger.write(uow.conn, uow.env_id, entry, now)


def _set_last(uow: UnitOfWork, card: Any, approved: int) -> None:
    uow.conn.execute(
        sa.update(gift_cards).where(gift_cards.c.id == card.id).values(last_approved=approved)
    )


def view(uow: UnitOfWork, alias: str) -> GiftCardView:
    row = uow.conn.execute(
        sa.select(gift_cards).where(
            gift_cards.c.env_id == uow.env_id, gift_cards.c.external_id == alias
        )
    ).first()
    if row is None:
        raise NotFound(f"no gift card {alias!r}")
    return GiftCardView(alias, row.currency, _balance(uow, row), row.last_approved)


MAX_BATCH = 100  # ids in one snapshot read


def names(value: Any, where: str) -> list[str]:
    """A list of at most MAX_BATCH ids, each named once, in the order given."""
    if not isinstance(value, list | tuple) or not value:
        raise InvalidInput(f"{where}: one or more ids")
    if len(value) > MAX_BATCH:
        raise InvalidInput(f"{where}: at most {MAX_BATCH} ids, {len(value)} given")
    return list(dict.fromkeys(as_name(v, where) for v in value))


def views(uow: UnitOfWork, aliases: list[str]) -> list[GiftCardView]:
    """Several cards' balances in one statement, so in one snapshot on every database."""
    account = ledger_accounts.c.name == sa.literal("card:") + sa.cast(gift_cards.c.id, sa.String)
    rows = uow.conn.execute(
        sa.select(
            gift_cards.c.external_id,
            gift_cards.c.currency,
            gift_cards.c.last_approved,
            sa.func.coalesce(ledger_accounts.c.balance, 0).label("balance"),
        )
        .select_from(gift_cards)
        .outerjoin(
            ledger_accounts,
            sa.and_(
                ledger_accounts.c.env_id == gift_cards.c.env_id,
                ledger_accounts.c.asset == sa.literal("money:") + gift_cards.c.currency,
                account,
            ),
        )
        .where(gift_cards.c.env_id == uow.env_id, gift_cards.c.external_id.in_(aliases))
    ).all()
    by_alias = {r.external_id: r for r in rows}
    for alias in aliases:
        if alias not in by_alias:
            raise NotFound(f"no gift card {alias!r}")
    return [
        GiftCardView(a, by_alias[a].currency, int(by_alias[a].balance), by_alias[a].last_approved)
        for a in aliases
    ]


def inquire(uow: UnitOfWork, number: Any, pin: Any, now: datetime) -> GiftCardView:
    """Balance by number and PIN. Unknown card, wrong PIN and locked card answer alike, and
    cost alike: every inquiry reads the card by its number and checks one PIN, against a
    dummy hash when the number is no card's (a mistyped check digit included) or the card is
    locked, so the time an answer takes does not tell that a card exists or is locked.

    Five wrong PINs in a row lock the card for 30 minutes; the count is written even
    though the answer is an error, so the caller commits it (see `record_inquiry`).
    """
    if not isinstance(number, str) or not cards.card_number_text(number):
        raise InvalidInput("number: ASCII digits only")
    if not isinstance(pin, str):
        raise InvalidInput("pin: text is required")
    alike = NotFound("no gift card with that number and PIN")
    row = uow.conn.execute(
        sa.select(gift_cards)
        .where(gift_cards.c.env_id == uow.env_id, gift_cards.c.number == number)
        .with_for_update()
    ).first()
    shut = row is not None and row.locked_until is not None and row.locked_until > now
    stored = None if row is None or shut else row.pin_hash
    matched = cards.pin_matches(pin, stored or cards.DUMMY_HASH)  # one check, whatever was found
    if row is None or stored is None:
        raise alike
    if not matched:
        failures = row.pin_failures + 1
        locked = now + cards.LOCKOUT if failures >= cards.MAX_PIN_FAILURES else None
        uow.conn.execute(
            sa.update(gift_cards)
            .where(gift_cards.c.id == row.id)
            .values(pin_failures=0 if locked else failures, locked_until=locked)
        )
        uow.commit()  # the failure must count even though the answer is an error
        raise alike
    if row.pin_failures:
        uow.conn.execute(
            sa.update(gift_cards).where(gift_cards.c.id == row.id).values(pin_failures=0)
        )
    return GiftCardView(row.external_id, row.currency, _balance(uow, row), row.last_approved)


def hold_view(uow: UnitOfWork, hold_alias: str) -> dict[str, Any]:
    hold = _hold(uow, hold_alias, lock=False)
    card = uow.conn.execute(sa.select(gift_cards).where(gift_cards.c.id == hold.card_id)).one()
    return {
        "id": hold.external_id,
        "card": card.external_id,
        "state": hold.state,
        "amount": {"amount": format_money(hold.amount), "currency": card.currency},
        "captured": None
        if hold.captured is None
        else {"amount": format_money(hold.captured), "currency": card.currency},
        "expires_at": hold.expires_at.isoformat(),
        "card_balance": {"amount": format_money(_balance(uow, card)), "currency": card.currency},
    }


def last_hold(uow: UnitOfWork, card_alias: str) -> dict[str, Any]:
    """The hold just authorized on a card (the newest one)."""
    alias = uow.conn.execute(
        sa.select(holds.c.external_id)
        .join(gift_cards, gift_cards.c.id == holds.c.card_id)
        .where(gift_cards.c.env_id == uow.env_id, gift_cards.c.external_id == card_alias)
        .order_by(holds.c.id.desc())
        .limit(1)
    ).scalar_one()
    return hold_view(uow, alias)
