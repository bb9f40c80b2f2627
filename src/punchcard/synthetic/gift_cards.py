"""Gift cards as the generator tracks them: who holds which card and what is left on it.

A card is sold (in a store with a meal, or online) and given to a member, who spends
it on later orders until it is empty. The generator never spends more than a card's
balance, so every hold it asks for is approved in full.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import accumulate

# Face values in cents and how often each is sold.
AMOUNTS = (1000, 1500, 2500, 5000, 7500, 10000)
AMOUNT_CUMULATIVE = tuple(accumulate((10, 5, 35, 35, 5, 10)))  # how often each is sold
IN_STORE_PER_MILLE = 12  # orders that also buy a gift card
ONLINE_PER_MILLE = 8  # gift cards sold online, per order of the day
SELF_PERCENT = 20  # cards the buyer keeps; the rest are gifts to another member
USE_PERCENT = 85  # orders of a member holding a funded card that pay with it


def card_id(number: int) -> str:
    return f"gc{number:07d}"


@dataclass(slots=True)
class Wallets:
    """Each member's funded cards (oldest first) and every funded card's balance in cents."""

    held: dict[int, list[int]] = field(default_factory=dict)  # member -> card numbers
    balances: dict[int, int] = field(default_factory=dict)  # card number -> cents
    sold: int = 0

    def sell(self, rng: random.Random, holder: int) -> tuple[int, int]:
        """A new card with a face value, now held by `holder`: (card number, cents)."""
        self.sold += 1
        amount = rng.choices(AMOUNTS, cum_weights=AMOUNT_CUMULATIVE)[0]
        self.balances[self.sold] = amount
        self.held.setdefault(holder, []).append(self.sold)
        return self.sold, amount

    def spend(self, member: int, total: int) -> tuple[int, int] | None:
        """Pay what the member's oldest funded card covers of `total`: (card number, cents)."""
        cards = self.held.get(member)
        if not cards or total <= 0:
            return None
        card = cards[0]
        take = min(self.balances[card], total)
        left = self.balances[card] - take
        if left:
            self.balances[card] = left
        else:  # empty: forget it, so a long run keeps only funded cards in memory
            del self.balances[card]
            cards.pop(0)
            if not cards:
                del self.held[member]
        return card, take
