"""The chain a data set is about: its stores (city, timezone, tax, prices) and its members.

Everything is drawn from `random.Random` streams derived from the seed, so one seed and
one set of sizes always make the same chain. Members are kept as flat lists, not
objects: a million-order chain has a quarter of a million of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from itertools import accumulate
from zoneinfo import ZoneInfo

DEFAULT_START = date(2026, 3, 2)  # a Monday; the demo program's double-tuesday runs in March 2026
DEFAULT_DAYS = 91  # a quarter
ORDERS_PER_STORE = 25_000  # default store count: one store per this many orders, at least 4

# Weekly visits of a member: log-normal, median 0.2 (about one visit a month), sigma 1.
# Mean 0.2 * e^0.5 = 0.33 a week; 5% of members come weekly or more, 60% less than every
# fortnight. Capped at daily.
VISITS_MEDIAN_PER_WEEK = 0.2
VISITS_SIGMA = 1.0
VISITS_MAX_PER_WEEK = 7.0
MEAN_VISITS_PER_WEEK = 0.33


@dataclass(frozen=True, slots=True)
class City:
    name: str
    timezone: str
    tax_per_100k: int  # sales tax, in thousandths of a percent: 8875 is 8.875%
    price_level: int  # menu prices in percent of the base menu


# Interleaved so that the first four stores are in four different timezones.
CITIES = (
    City("New York", "America/New_York", 8875, 115),
    City("Chicago", "America/Chicago", 10250, 108),
    City("Denver", "America/Denver", 8810, 104),
    City("Los Angeles", "America/Los_Angeles", 9500, 112),
    City("Philadelphia", "America/New_York", 8000, 105),
    City("Dallas", "America/Chicago", 8250, 100),
    City("Phoenix", "America/Phoenix", 8600, 98),  # no daylight saving time
    City("San Francisco", "America/Los_Angeles", 8625, 120),
    City("Atlanta", "America/New_York", 8900, 100),
    City("Minneapolis", "America/Chicago", 8025, 102),
    City("Salt Lake City", "America/Denver", 7750, 97),
    City("Seattle", "America/Los_Angeles", 10350, 112),
    City("Miami", "America/New_York", 7000, 105),
    City("Houston", "America/Chicago", 8250, 98),
    City("Portland", "America/Los_Angeles", 0, 108),  # Oregon has no sales tax
)


@dataclass(frozen=True, slots=True)
class Store:
    id: str
    name: str
    city: City
    size: int  # relative share of the chain's members who call it home
    zone: ZoneInfo = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Chain:
    """The sizes and the stores of a data set: small, so it is built whole."""

    seed: int
    orders: int
    members: int
    start: date
    days: int
    stores: tuple[Store, ...]


def make_chain(
    *,
    seed: int = 7,
    orders: int = 10_000,
    stores: int | None = None,
    members: int | None = None,
    start: date = DEFAULT_START,
    days: int | None = None,
) -> Chain:
    """The chain for these sizes; what is not given follows from the number of orders."""
    if orders < 0:
        raise ValueError("orders: zero or more")
    days = DEFAULT_DAYS if days is None else days
    if days < 1:
        raise ValueError("days: at least 1")
    count = stores if stores is not None else max(4, min(400, orders // ORDERS_PER_STORE))
    if count < 1:
        raise ValueError("stores: at least 1")
    if members is None:
        # Enough members that an average one visits at the mean weekly rate over the span.
        members = max(1, round(orders * 7 / (days * MEAN_VISITS_PER_WEEK)))
    if members < 1:
        raise ValueError("members: at least 1")
    rng = random.Random(f"{seed}:stores")
    made = []
    for n in range(count):
        city = CITIES[n % len(CITIES)]
        branch = n // len(CITIES) + 1
        made.append(
            Store(
                id=f"store-{n + 1:03d}",
                name=city.name if branch == 1 else f"{city.name} #{branch}",
                city=city,
                size=max(1, round(1000 * rng.lognormvariate(0, 0.35))),
                zone=ZoneInfo(city.timezone),
            )
        )
    return Chain(seed, orders, members, start, days, tuple(made))


@dataclass(slots=True)
class Members:
    """Each member's weekly visit rate and home store, as flat lists indexed by member."""

    cumulative_rates: list[float]  # for weighted choice: a member is picked in proportion
    home: list[int]  # store index

    def pick(self, rng: random.Random, k: int) -> list[int]:
        """`k` members, each in proportion to how often they visit."""
        return rng.choices(range(len(self.home)), cum_weights=self.cumulative_rates, k=k)


def make_members(chain: Chain) -> Members:
    rng = random.Random(f"{chain.seed}:members")
    stores = range(len(chain.stores))
    home = rng.choices(stores, weights=[s.size for s in chain.stores], k=chain.members)
    rates = (
        min(VISITS_MAX_PER_WEEK, rng.lognormvariate(0, VISITS_SIGMA) * VISITS_MEDIAN_PER_WEEK)
        for _ in range(chain.members)
    )
    return Members(list(accumulate(rates)), home)


def member_id(index: int) -> str:
    return f"m{index + 1:07d}"
