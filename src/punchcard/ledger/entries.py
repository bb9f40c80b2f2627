"""Ledger transactions as values, checked before anything is written.

Guarantees (each checked by tests/unit/test_ledger_properties.py):
- the postings of a transaction sum to zero;
- amounts are integers (points, or minor units of a currency), never zero;
- a transaction moves one asset only.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnbalancedTransaction(ValueError):
    """Postings that do not sum to zero: a bug above the ledger, never a user error."""


@dataclass(frozen=True, slots=True)
class Entry:
    asset: str  # "points:<program>" or "money:<currency>"
    kind: str  # earn, clawback, redeem, expire, issue, reload, authorize, capture, ...
    postings: tuple[tuple[str, int], ...]  # (account, amount)
    reference: str = ""

    def __post_init__(self) -> None:
        if sum(amount for _, amount in self.postings) != 0:
            raise UnbalancedTransaction(
                f"{self.kind} {self.reference}: postings do not sum to zero"
            )
        if len(self.postings) < 2:
            raise UnbalancedTransaction(
                f"{self.kind} {self.reference}: a transaction moves between accounts"
            )
        if any(type(a) is not int or a == 0 for _, a in self.postings):
            raise UnbalancedTransaction(
                f"{self.kind} {self.reference}: zero or non-integer posting"
            )


def transfer(
    asset: str, kind: str, source: str, target: str, amount: int, reference: str = ""
) -> Entry:
    """Move `amount` (> 0) from `source` to `target`."""
    if amount <= 0:
        raise UnbalancedTransaction(f"{kind} {reference}: a transfer moves a positive amount")
    return Entry(asset, kind, ((source, -amount), (target, amount)), reference)


def points_asset(program_id: str) -> str:
    return f"points:{program_id}"


def money_asset(currency: str) -> str:
    return f"money:{currency}"


# System accounts; a member's points sit in f"member:{id}", a card's money in f"card:{id}".
EARNED = "earned"
REDEEMED = "redeemed"
EXPIRED = "expired"
ISSUED = "issued"
SPENT = "spent"
SYSTEM_ACCOUNTS = frozenset({EARNED, REDEEMED, EXPIRED, ISSUED, SPENT})
