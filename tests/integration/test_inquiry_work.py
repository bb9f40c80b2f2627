"""Every gift card inquiry does the same work, whatever the number finds: one PIN check
(scrypt, the bulk of its time) and the same read of the card. A locked card and a number
failing its check digit answered in about 12 ms, every other in about 70 ms: the time told
an attacker the card existed and was now locked. Work is counted, not timed: a timing test
is not reliable on a shared machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from punchcard.errors import InvalidInput, NotFound
from punchcard.services import cards, gift_cards
from punchcard.store.uow import UnitOfWork

from .helpers import START, new_app


def _issue(engine: sa.Engine, env_id: str, alias: str) -> gift_cards.IssuedCard:
    with UnitOfWork(engine, env_id) as uow:
        issued = gift_cards.issue(uow, alias, {"amount": "5.00"}, START)
        uow.commit()
    return issued


@contextmanager
def _statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL an inquiry sends, as the driver gets it."""
    sent: list[str] = []

    def seen(*args: Any) -> None:
        sent.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)


def _inquire(engine: sa.Engine, env_id: str, number: str, pin: str) -> tuple[str, int, list[str]]:
    """The answer's kind, the PIN checks made and the statements sent."""
    before = cards.pin_checks()
    with _statements(engine) as sent, UnitOfWork(engine, env_id) as uow:
        try:
            gift_cards.inquire(uow, number, pin, START)
            answer = "balance"
        except NotFound:
            answer = "not found"
    return answer, cards.pin_checks() - before, sent


def _wrong(pin: str) -> str:
    return "0000" if pin != "0000" else "1111"


def test_every_inquiry_checks_one_pin_and_reads_the_card_alike(engine: sa.Engine) -> None:
    app = new_app(engine)
    known = _issue(engine, app.env_id, "g1")
    shut = _issue(engine, app.env_id, "g2")
    for _ in range(cards.MAX_PIN_FAILURES):
        _inquire(engine, app.env_id, shut.number, _wrong(shut.pin))
    body = known.number[:-1]
    mistyped = body + str((int(cards.luhn_digit(body)) + 1) % 10)
    other = "1" if known.number[-2] == "0" else "0"
    unknown = known.number[:-2] + other + cards.luhn_digit(known.number[:-2] + other)
    runs = {
        "check digit wrong": _inquire(engine, app.env_id, mistyped, known.pin),
        "too short": _inquire(engine, app.env_id, "1234", known.pin),
        "unknown number": _inquire(engine, app.env_id, unknown, known.pin),
        "locked, right pin": _inquire(engine, app.env_id, shut.number, shut.pin),
        "wrong pin": _inquire(engine, app.env_id, known.number, _wrong(known.pin)),
        "right pin": _inquire(engine, app.env_id, known.number, known.pin),
    }
    assert {name: (answer, checks) for name, (answer, checks, _) in runs.items()} == {
        "check digit wrong": ("not found", 1),
        "too short": ("not found", 1),
        "unknown number": ("not found", 1),
        "locked, right pin": ("not found", 1),
        "wrong pin": ("not found", 1),
        "right pin": ("balance", 1),
    }
    read = runs["unknown number"][2]
    [by_number] = [s for s in read if not s.startswith("BEGIN")]  # SQLite's BEGIN IMMEDIATE
    assert "FROM gift_cards" in by_number and "gift_cards.number = " in by_number
    for name, (_, _, sent) in runs.items():
        assert sent[: len(read)] == read, name  # the same read of the card, first
    for name in ("check digit wrong", "too short", "locked, right pin"):
        assert runs[name][2] == read, name  # and nothing else


@pytest.mark.parametrize(
    ("number", "pin", "detail"),
    [
        ("²1", "1234", "number: ASCII digits only"),
        ("6000 0000 0000 0000", "1234", "number: ASCII digits only"),
        ("", "1234", "number: ASCII digits only"),
        (6000000000000000, "1234", "number: ASCII digits only"),
        ("6000000000000000", 1234, "pin: text is required"),
    ],
)
def test_a_number_not_in_ascii_digits_is_invalid_input_and_counts_nothing(
    engine: sa.Engine, number: Any, pin: Any, detail: str
) -> None:
    """`"²1".isdigit()` is true: the check digit's int() then failed, a 500."""
    app = new_app(engine)
    before = cards.pin_checks()
    with UnitOfWork(engine, app.env_id) as uow, pytest.raises(InvalidInput) as refused:
        gift_cards.inquire(uow, number, pin, START)
    assert (refused.value.message, cards.pin_checks() - before) == (detail, 0)
