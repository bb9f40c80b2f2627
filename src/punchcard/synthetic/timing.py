"""When orders happen: busier weekends, and lunch and dinner peaks in each store's local time.

A store is open 10:30 to 22:00 local. Of a day's orders, 45% fall in a lunch peak
(normal around 12:15, sd 45 min), 35% in a dinner peak (around 18:15, sd 60 min) and
20% evenly over the open hours. That puts about 83% of orders in 11:00-14:00 or
17:00-20:00 local, against 52% if orders were spread evenly (docs/synthetic.md).
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

from punchcard.engine.evaluate import spread
from punchcard.synthetic.chain import Chain, Store

OPENS_S = 10 * 3600 + 30 * 60  # seconds after local midnight
CLOSES_S = 22 * 3600
LUNCH = (0.45, 12.25 * 3600, 45 * 60)  # share, mean and sd in seconds after midnight
DINNER = (0.35, 18.25 * 3600, 60 * 60)
# Monday to Sunday: Friday and Saturday are the busiest days, Monday the quietest.
WEEKDAY_WEIGHTS = (88, 92, 96, 100, 118, 112, 94)


def orders_per_day(chain: Chain) -> list[int]:
    """Split the orders over the days by weekday weight, exactly (largest remainder)."""
    weights = [
        WEEKDAY_WEIGHTS[(chain.start + timedelta(days=d)).weekday()] for d in range(chain.days)
    ]
    return spread(chain.orders, weights)


def local_second(rng: random.Random) -> int:
    """A moment of the open day, in seconds after local midnight, from the peaks above."""
    pick = rng.random()
    if pick < LUNCH[0] + DINNER[0]:
        _, mean, sd = LUNCH if pick < LUNCH[0] else DINNER
        while True:  # truncated to the open hours
            second = round(rng.normalvariate(mean, sd))
            if OPENS_S <= second < CLOSES_S:
                return second
    return rng.randrange(OPENS_S, CLOSES_S)


def local_time(store: Store, day: date, second: int) -> datetime:
    """The aware local time of `second` after midnight at `store` on `day`."""
    clock = time(second // 3600, second // 60 % 60, second % 60)
    return datetime.combine(day, clock, tzinfo=store.zone)


def day_opens_utc(chain: Chain, day: date) -> datetime:
    """The first moment any store of the chain is open on `day` (local): nothing earlier is that day's."""
    return min(local_time(store, day, OPENS_S) for store in chain.stores).astimezone(UTC)
