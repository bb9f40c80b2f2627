"""Gift card numbers (Luhn check digit) and PINs (salted scrypt), and the PIN lockout rule."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from datetime import timedelta

MAX_PIN_FAILURES = 5
LOCKOUT = timedelta(minutes=30)
_ISSUER_PREFIX = "6"  # a 16-digit number in the range card schemes leave to private labels


def luhn_digit(digits: str) -> str:
    """The check digit that makes `digits + check` pass the Luhn test."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def card_number_text(number: str) -> bool:
    """Whether `number` is written as a card number can be: ASCII digits, one or more (`"²1"`
    passes `isdigit()`)."""
    return number.isascii() and number.isdigit()


def new_number() -> str:
    body = _ISSUER_PREFIX + "".join(secrets.choice("0123456789") for _ in range(14))
    return body + luhn_digit(body)


def new_pin() -> str:
    return f"{secrets.randbelow(10_000):04d}"


def hash_pin(pin: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


_checked = 0
_checking = threading.Lock()


def pin_checks() -> int:
    """PIN checks (scrypt runs, the bulk of an inquiry's time) made by this process so far:
    how tests see that every inquiry does the same work, whatever it finds."""
    return _checked


def pin_matches(pin: str, stored: str) -> bool:
    global _checked
    with _checking:
        _checked += 1
    _, salt_hex, digest_hex = stored.split("$")
    digest = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(salt_hex), n=2**14, r=8, p=1, dklen=32)
    return hmac.compare_digest(digest.hex(), digest_hex)


# A hash of no card's PIN: unknown cards are checked against it so they cost what a known card does.
DUMMY_HASH = "scrypt$" + "00" * 16 + "$" + "00" * 32
