"""The menu, chosen so that the demo program's rules fire (src/punchcard/demo/burrito-rewards.yaml).

GUAC, as a side and as an add-on, earns the `guac-bonus` item bonus; `alcohol` lines
are excluded from earning; a free-burrito reward would match the `burrito` lines.
Prices are the base menu's; a store charges them times its city's price level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    category: str
    price: int  # cents, base menu
    lunch: int  # weight before 16:00 local
    dinner: int  # weight from 16:00 local
    customizable: bool = False  # takes modifiers
    quantities: tuple[int, ...] = (85, 12, 3)  # weights of qty 1, 2, 3, ...
    cumulative: tuple[int, ...] = field(init=False, repr=False)  # for random.choices

    def __post_init__(self) -> None:
        object.__setattr__(self, "cumulative", tuple(accumulate(self.quantities)))


@dataclass(frozen=True, slots=True)
class Extra:
    sku: str
    category: str
    price: int  # cents, base menu; 0 for a free change
    percent: int  # chance that a customizable line has it


ITEMS = (
    Item("BURR", "burrito", 1045, 20, 18, customizable=True),
    Item("BURR-STEAK", "burrito", 1195, 9, 10, customizable=True),
    Item("BURR-VEG", "burrito", 965, 5, 4, customizable=True),
    Item("BOWL", "bowl", 1045, 14, 11, customizable=True),
    Item("BOWL-STEAK", "bowl", 1195, 6, 6, customizable=True),
    Item("TACO", "taco", 395, 10, 12, customizable=True, quantities=(25, 40, 25, 10)),
    Item("CHIPS", "side", 325, 9, 9),
    Item("GUAC", "side", 345, 4, 5),
    Item("QUESO", "side", 325, 3, 4),
    Item("KIDS", "kids_meal", 695, 2, 4),
    Item("SODA", "drink", 295, 10, 8),
    Item("AGUA", "drink", 345, 4, 3),
    Item("BEER", "alcohol", 650, 1, 6),
    Item("MARG", "alcohol", 1100, 1, 5),
)
EXTRAS = (
    Extra("GUAC", "add_on", 245, 22),
    Extra("QUESO", "add_on", 150, 12),
    Extra("DOUBLE-PROTEIN", "add_on", 395, 7),
    Extra("NO-RICE", "add_on", 0, 6),
)
GIFT_CARD_SKU = "GIFTCARD"
DINNER_FROM_S = 16 * 3600  # seconds after local midnight

# Lines in an order, 1 to 8 (mean 2.3); a catering order (0.3%) has 10 to 16.
LINE_COUNT_WEIGHTS = (340, 300, 170, 90, 50, 30, 15, 5)
CATERING_PER_MILLE = 3
# Cumulative weights, made once: random.choices would add them up on every call.
LINE_COUNTS = tuple(accumulate(LINE_COUNT_WEIGHTS))
LUNCH = tuple(accumulate(item.lunch for item in ITEMS))
DINNER = tuple(accumulate(item.dinner for item in ITEMS))


def store_price(price: int, level: int) -> int:
    """A base price at a store's price level, to the nearest 5 cents."""
    return (price * level + 250) // 500 * 5
