"""Points lots: what is left of each positive posting, spent oldest first (rule 11).

Guarantees (tests/unit/test_lots_properties.py):
- while the posted balance is at or above zero it equals the sum of what is left of the lots;
- while it is below zero (a debt) no lot has anything left;
- spending never takes more than the balance; a clawback takes the order's own lots first.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Lot:
    id: int
    order_id: int | None
    remaining: int
    posted_seq: int  # posting order: oldest first


def take_oldest(
    lots: Sequence[Lot], amount: int, first_from_order: int | None = None
) -> list[tuple[int, int]]:
    """Which lots give how much for `amount`: the order's own lots first, then the oldest.

    Returns (lot id, points taken) pairs; the sum may fall short of `amount` when the lots run out.
    """
    ordered = sorted(
        (lot for lot in lots if lot.remaining > 0),
        key=lambda lot: (
            lot.order_id != first_from_order or first_from_order is None,
            lot.posted_seq,
        ),
    )
    taken: list[tuple[int, int]] = []
    left = amount
    for lot in ordered:
        if left == 0:
            break
        part = min(left, lot.remaining)
        taken.append((lot.id, part))
        left -= part
    return taken


@dataclass(frozen=True, slots=True)
class Earning:
    """How an earning lands: first it pays any debt, the rest forms a lot."""

    pays_debt: int
    lot: int


def split_earning(balance: int, points: int) -> Earning:
    debt = max(0, -balance)
    paid = min(debt, points)
    return Earning(pays_debt=paid, lot=points - paid)


@dataclass(frozen=True, slots=True)
class Clawback:
    """How a clawback lands: from lots, the rest a debt (allow) or dropped (clamp)."""

    from_lots: list[tuple[int, int]]
    debt: int
    dropped: int

    @property
    def posted(self) -> int:
        """What the ledger records as taken back."""
        return sum(part for _, part in self.from_lots) + self.debt


def plan_clawback(
    lots: Sequence[Lot], amount: int, order_id: int | None, negative_balance: str
) -> Clawback:
    taken = take_oldest(lots, amount, first_from_order=order_id)
    short = amount - sum(part for _, part in taken)
    if negative_balance == "allow":
        return Clawback(taken, debt=short, dropped=0)
    return Clawback(taken, debt=0, dropped=short)


def add_months(moment: datetime, months: int, zone: ZoneInfo) -> datetime:
    """The same local wall time `months` calendar months later; a missing day is the month's last."""
    local = moment.astimezone(zone)
    index = local.month - 1 + months
    year, month = local.year + index // 12, index % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    naive = local.replace(tzinfo=None).replace(year=year, month=month, day=day)
    return naive.replace(tzinfo=zone)
