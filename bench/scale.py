"""The scale bench (issue 18, part 8): what an order costs with 100,000 members and a million
orders already in the database, beside what it costs on an empty one, in one run.

Two census passes of bench/end_to_end.py, each on a new PostgreSQL database, place the same
orders: the synthetic chain's first `--orders` (seed 7), every other member of the chain being
one who already exists. On the empty database those members are enrolled with no history; on
the filled one they are members of the fill, picked in proportion to how often they order.
Before its run, the filled database gets, in set-based SQL, what the real path would have
written for `--fill-members` members and `--fill-orders` closed, posted orders over the days
up to yesterday (from the first day no promotion of the program runs, in the tier window of
this year):

- each member enrolled (its tier history, its `member.enrolled` event) with its final state:
  tier, progress, visits, punches, last activity, event sequence and next due time;
- each order with its document and outcome, evaluated by the engine (a few thousand of the
  synthetic chain's baskets, at each tier), as it would close at the member's tier then; its
  points lot, its ledger transaction and two postings, the member's account and balance;
- its events (`order.evaluated`, `points.posted`, `punch_card.progressed`,
  `reward.issued`, `tier.changed`, and `reward.expired` once a reward's days have passed), in
  each member's sequence; the punch card's rewards; the tier changes;
- idempotency rows for the orders and enrolments of the last 72 hours (the rest are purged):
  their sealed answers are random bytes of an answer's length, as only their key could open
  them;
- the webhook endpoint's cursor past every event, as if each had been delivered.

Orders are written in time order, a batch at a time, so ids grow with time as they would.
Members order at most once a local day, in proportion to a weekly visit rate drawn as the
synthetic chain draws it. No order is refunded, voided or pays with a reward, and no points
are spent. Then `punchcard audit` (which must find nothing), VACUUM ANALYZE and a CHECKPOINT.

First, a check: a small fill (`--check-members`, `--check-orders`) whose members' histories
are placed again through the API, in a named sandbox whose clock is moved to each request;
every row the fill wrote for them must be one the real path wrote.

Prints each figure of the two runs, their ratio, and whether the filled database's cost is
within 15% of the empty one's (issue 18's target); and a JSON line. Never fails a build.
Run: `make bench-scale`, or `python bench/scale.py --orders 1000`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
from end_to_end import (
    PROGRAM,
    PUNCHCARD,
    Pass,
    Receiver,
    cli,
    database,
    measure,
    serve,
    setup,
    stop,
    traffic,
)
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from punchcard.engine.evaluate import Standing, allocate, evaluate
from punchcard.engine.members import window_bounds
from punchcard.engine.money import format_money
from punchcard.engine.orders import Order, check_order, parse_order_parts
from punchcard.engine.programs import Program, parse_program
from punchcard.ledger.entries import EARNED, points_asset
from punchcard.store.codec import order_document, outcome_document
from punchcard.synthetic.chain import VISITS_MAX_PER_WEEK, VISITS_MEDIAN_PER_WEEK, VISITS_SIGMA
from punchcard.synthetic.timing import CLOSES_S, OPENS_S

SEED = 18  # the fill's; the measured orders are the chain's seed 7
SHAPES = 3000  # distinct baskets the fill's orders are drawn from
BATCHES = 50  # the fill commits this often (a week or so of orders each)
DAYS = 250  # the fill's span, ending yesterday, unless this year or a promotion is shorter
IDEMPOTENCY_TTL = timedelta(hours=72)  # api/context.py's; the worker purges older keys
SEALED = b"\x00pc-sealed-v2\x00"  # a sealed answer's prefix; then a 12-byte nonce, the text, a tag
ORDER_MARK = '"@order@"'  # where an order's id goes in an evaluated event
TARGET = 0.15
WRITES = re.compile(r"^(?:WITH \w+ AS \()?INSERT INTO (\w+)|^UPDATE (webhook_endpoints)")


# --- what the fill writes ------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """The fill's days (local to the program), inside one tier window and after every
    promotion, ending yesterday: so every order of it has posted, and none needs a promotion
    or a window's end to be judged."""

    first: date
    days: int
    zone: ZoneInfo
    now: datetime

    @classmethod
    def of(cls, program: Program, now: datetime) -> Span:
        zone = program.zone
        last = now.astimezone(zone).date() - timedelta(days=1)
        first = max(last - timedelta(days=DAYS - 1), date(last.year, 1, 2))
        for promotion in program.promotions:  # the day after its end (which is exclusive)
            first = max(first, (promotion.ends - timedelta(microseconds=1)).date() + timedelta(1))
        return cls(first, (last - first).days + 1, zone, now)


def check_program(program: Program) -> None:
    """The fill models this much of a program (the bench's does no more)."""
    wanted = {
        "accrual_delay is zero (an order posts as it closes)": not program.earn.accrual_delay,
        "tiers by points": program.tiers.metric == "points",
        "a calendar-year tier window": program.tiers.window == "calendar_year",
        "one punch card": len(program.punch_cards) == 1,
        "expiry months after earning": program.expiry is not None
        and program.expiry.months_after_earn is not None,
    }
    missing = [what for what, holds in wanted.items() if not holds]
    if missing:
        raise SystemExit(f"bench/scale.py fills only a program with {', '.join(missing)}")


def order_counts(members: int, orders: int, days: int, seed: int = SEED) -> list[int]:
    """Each member's orders, `orders` in all: in proportion to a weekly visit rate drawn as the
    synthetic chain draws it (log-normal, capped), the cap lowered if need be so that no
    member orders more than once a day."""
    if members * days < orders:
        raise SystemExit(f"{orders} orders do not fit {members} members in {days} days")
    rng = random.Random(f"{seed}:members")
    rates = [rng.lognormvariate(0, VISITS_SIGMA) for _ in range(members)]
    cap = VISITS_MAX_PER_WEEK / VISITS_MEDIAN_PER_WEEK
    while True:
        weights = [min(rate, cap) for rate in rates]
        total = sum(weights)
        counts, so_far, before = [], 0.0, 0
        for weight in weights:
            so_far += weight
            upto = round(orders * so_far / total)
            counts.append(upto - before)
            before = upto
        if max(counts) <= days:
            return counts
        cap *= 0.9


def member_name(index: int) -> str:
    """The fill's member `index` (from 0)."""
    return f"fill-m{index + 1:06d}"


@dataclass(frozen=True)
class Shape:
    """One basket evaluated at each tier: the columns and event texts it gives."""

    body: dict[str, Any]  # as the synthetic chain places it
    document: str
    line_discounts: str
    answer_bytes: int  # about what its sealed answer holds
    points: list[int]  # by tier
    spend: list[int]
    visit: list[bool]
    outcome: list[str]  # with the day as `day_mark`
    evaluated: list[str]  # with the order as ORDER_MARK and the day as `day_mark`


def shapes(program: Program, count: int, day: date) -> tuple[list[Shape], str]:
    """`count` of the synthetic chain's baskets (seed SEED), each evaluated by the engine as it
    would close on `day` at each tier (no other visit that day, no promotion used): and the
    text of `day` in their outcomes, where an order's own day goes."""
    at = datetime.combine(day, datetime.min.time(), program.zone) + timedelta(hours=12)
    day_mark = f'"visit_day": "{day.isoformat()}"'
    made = []
    for body in traffic(count, seed=SEED)[1]:
        order = Order(id=body["id"], at=at, **parse_order_parts(body))
        check_order(order)
        allocation = allocate(program, order, [])
        document = json.dumps(order_document(order))
        outcomes = [
            evaluate(program, order, allocation, Standing(tier=level.id))
            for level in program.tiers.levels
        ]
        texts = [outcome_document(outcome) for outcome in outcomes]
        evaluated = [
            json.dumps(
                {
                    "order": "@order@",
                    **text,
                    "qualifying_spend": {
                        "amount": format_money(outcome.qualifying_spend),
                        "currency": program.currency,
                    },
                }
            )
            for text, outcome in zip(texts, outcomes, strict=True)
        ]
        for text in [*evaluated, *(json.dumps(t) for t in texts)]:
            assert text.count(day_mark) == 1, text
        made.append(
            Shape(
                body,
                document,
                json.dumps(dict(allocation.line_discounts)),
                len(document) + len(json.dumps(texts[0])) + 400,
                [o.points for o in outcomes],
                [o.qualifying_spend for o in outcomes],
                [o.visit for o in outcomes],
                [json.dumps(t) for t in texts],
                evaluated,
            )
        )
    return made, day_mark


EVENTS = (  # kind -> type, in the order one order's events are written
    "member.enrolled",
    "order.evaluated",
    "points.posted",  # no points.pending: each order posts as it closes (no accrual delay)
    "punch_card.progressed",
    "reward.issued",
    "tier.changed",
    "reward.expired",
)


class Filler:
    """Fills a bench database (migrated, with its tenant, program and webhook endpoint) with a
    member for each of `counts`, placing that many orders; `filler(url, keys)` is the `fill`
    hook of bench/end_to_end.py's `measure`. Then the audit, VACUUM ANALYZE, a CHECKPOINT."""

    def __init__(self, span: Span, counts: list[int], console: Console) -> None:
        self.span, self.counts = span, counts
        self.orders = sum(counts)
        self.console = console
        self.seconds: dict[str, float] = {}
        self.audit = ""
        self.audit_ok = False
        self.rows: dict[str, int] = {}
        self.by_table: dict[str, float] = {}  # seconds spent writing each table, and planning
        self.shapes: list[Shape] = []

    def __call__(self, url: str, keys: dict[str, str]) -> None:
        began = time.perf_counter()
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                self._fill(conn, keys["live_key"])
            self.seconds["fill"] = time.perf_counter() - began
            with engine.connect() as conn:
                self.rows = {
                    table: conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
                    for table in (
                        "members",
                        "orders",
                        "lots",
                        "ledger_accounts",
                        "ledger_transactions",
                        "ledger_postings",
                        "outbox",
                        "tier_changes",
                        "rewards",
                        "idempotency_keys",
                    )
                }
        finally:
            engine.dispose()
        began = time.perf_counter()
        done = subprocess.run(
            [PUNCHCARD, "audit", "--database", url],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "COLUMNS": "200"},
        )
        self.seconds["audit"] = time.perf_counter() - began
        self.audit, self.audit_ok = done.stdout + done.stderr, done.returncode == 0
        print(self.audit, end="", flush=True)
        began = time.perf_counter()
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("VACUUM (ANALYZE)")
                conn.exec_driver_sql("CHECKPOINT")
        finally:
            engine.dispose()
        self.seconds["vacuum_analyze"] = time.perf_counter() - began

    def _fill(self, conn: sa.Connection, live_key: str) -> None:
        key_id, env = conn.execute(
            sa.text("SELECT id, env_id FROM api_keys WHERE position(id || '_' IN :key) = 1"),
            {"key": live_key},
        ).one()
        version, source = conn.execute(
            sa.text(
                "SELECT id, source FROM program_versions WHERE env_id = :env"
                " ORDER BY version DESC LIMIT 1"
            ),
            {"env": env},
        ).one()
        program = parse_program(source)
        check_program(program)
        span, counts = self.span, self.counts
        made, day_mark = shapes(program, SHAPES, span.first)
        self.shapes = made
        card = program.punch_cards[0]
        expiry = program.expiry
        assert expiry is not None and expiry.months_after_earn is not None
        window_start, window_end = window_bounds(
            program, datetime.combine(span.first, datetime.min.time(), span.zone)
        )
        levels = [level.id for level in program.tiers.levels]
        thresholds = [program.tiers.threshold_units(level) for level in program.tiers.levels]
        reached = (
            "CASE "
            + " ".join(
                f"WHEN progress >= {units} THEN {rank}"
                for rank, units in reversed(list(enumerate(thresholds)))
            )
            + " END"
        )
        p = {
            "env": env,
            "key_id": key_id,
            "version": version,
            "zone": span.zone.key,
            "first_day": span.first,
            "days": span.days,
            "opens": OPENS_S,
            "open_s": CLOSES_S - OPENS_S,
            "now": span.now,
            "shapes": len(made),
            "levels": levels,
            "goal": card.goal,
            "card": json.dumps(card.id),
            "reward": card.reward,
            "valid": timedelta(days=program.rewards_by_id[card.reward].valid_days),
            "months": expiry.months_after_earn,
            "asset": points_asset(program.program),
            "earned": EARNED,
            "window_start": window_start,
            "window_end": window_end,
            "day_mark": day_mark,
            "order_mark": ORDER_MARK,
            "types": list(EVENTS),
            "ttl": IDEMPOTENCY_TTL,
            "sealed": SEALED,
        }

        def run(sql: str, **more: Any) -> Any:
            began = time.perf_counter()
            result = conn.execute(sa.text(sql), {**p, **more})
            what = WRITES.search(sql)
            table = next((g for g in what.groups() if g), "") if what else ""
            table = "planning" if table in ("", "fill_shape", "fill_member") else table
            self.by_table[table] = self.by_table.get(table, 0.0) + time.perf_counter() - began
            return result

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        steps: list[tuple[str, Callable[[], None]]] = [
            ("shapes and members", lambda: _plan_members(run, made, counts)),
            ("each member's orders: when, what", lambda: _plan_orders(run)),
            ("tiers along each member's orders", lambda: _plan_tiers(run, reached)),
            ("each order's points, visit, tier after", lambda: _plan_facts(run, reached)),
            ("each member's events in sequence", lambda: _plan_events(run)),
            ("members and their accounts", lambda: _write_members(run)),
        ]
        with progress:
            planning = progress.add_task("planning", total=len(steps))
            writing = progress.add_task("orders written", total=self.orders)
            for what, step in steps:
                progress.update(planning, description=f"planning: {what}")
                step()
                conn.commit()
                progress.advance(planning)
            progress.update(planning, description="planned")
            bounds = run(
                "SELECT i, t FROM fill_fact WHERE (i - 1) % :every = 0 ORDER BY i",
                every=-(-self.orders // BATCHES),
            ).all()
            for n, (lo, t_lo) in enumerate(bounds):
                hi, t_hi = bounds[n + 1] if n + 1 < len(bounds) else (self.orders + 1, None)
                _write_batch(run, lo, hi, None if n == 0 else t_lo, t_hi)
                conn.commit()
                progress.advance(writing, hi - lo)
            _move_cursor(run)
            conn.commit()


def _plan_members(run: Callable[..., Any], made: list[Shape], counts: list[int]) -> None:
    run("SET work_mem = '256MB'")  # the planning sorts and windows, in memory
    run(
        "CREATE TEMP TABLE fill_shape (s int, level int, points bigint, spend bigint,"
        " visit boolean, document text, line_discounts text, outcome text, evaluated text,"
        " answer_bytes int, PRIMARY KEY (s, level))"
    )
    rows = [
        (s, level, shape, n) for s, shape in enumerate(made) for level, n in enumerate(shape.points)
    ]
    run(
        "INSERT INTO fill_shape SELECT * FROM unnest(CAST(:s AS int[]), CAST(:level AS int[]),"
        " CAST(:points AS bigint[]), CAST(:spend AS bigint[]), CAST(:visit AS boolean[]),"
        " CAST(:document AS text[]), CAST(:discounts AS text[]), CAST(:outcome AS text[]),"
        " CAST(:evaluated AS text[]), CAST(:answer AS int[]))",
        s=[s for s, _, _, _ in rows],
        level=[level for _, level, _, _ in rows],
        points=[points for _, _, _, points in rows],
        spend=[shape.spend[level] for _, level, shape, _ in rows],
        visit=[shape.visit[level] for _, level, shape, _ in rows],
        document=[shape.document for _, _, shape, _ in rows],
        discounts=[shape.line_discounts for _, _, shape, _ in rows],
        outcome=[shape.outcome[level] for _, level, shape, _ in rows],
        evaluated=[shape.evaluated[level] for _, level, shape, _ in rows],
        answer=[shape.answer_bytes for _, _, shape, _ in rows],
    )
    run(
        "CREATE TEMP TABLE fill_member (m int PRIMARY KEY, n int NOT NULL, ext text NOT NULL,"
        " enrolled_at timestamptz, id int, account_id int)"
    )
    run(
        "INSERT INTO fill_member (m, n, ext) SELECT m, n, ext"
        " FROM unnest(CAST(:counts AS int[]), CAST(:names AS text[])) WITH ORDINALITY"
        " AS u(n, ext, m)",
        counts=counts,
        names=[member_name(i) for i in range(len(counts))],
    )
    # A uniform number in [0, 1) from an integer and a salt, the same in every run.
    run(
        "CREATE FUNCTION pg_temp.uniform(x bigint, salt bigint) RETURNS float8"
        " AS $$ SELECT (hashint8extended(x, salt) & 2147483647) / 2147483648.0 $$"
        " LANGUAGE sql IMMUTABLE"
    )
    # `n` random bytes (a sealed answer's nonce, text and tag look so).
    run(
        "CREATE FUNCTION pg_temp.noise(n int) RETURNS bytea AS $$"
        " SELECT substring(decode(string_agg(md5(random()::text), ''), 'hex') FROM 1 FOR n)"
        " FROM generate_series(1, (n + 15) / 16) $$ LANGUAGE sql VOLATILE"
    )


def _plan_orders(run: Callable[..., Any]) -> None:
    """Member m's k-th order (of n) is on a day of its own share of the span, at a time the
    stores are open, of a basket drawn from the shapes; at tier 0 until the walk says."""
    run(
        "CREATE TEMP TABLE fill_order AS"
        " SELECT fm.m, k, 0 AS level,"
        "  (CAST(:first_day AS date) + ((k - 1) * CAST(:days AS int) / fm.n"
        "    + CAST(floor(pg_temp.uniform(fm.m * 1024 + k, 1) * (CAST(:days AS int) / fm.n))"
        "     AS int))"
        "   + (CAST(:opens AS int) + floor(pg_temp.uniform(fm.m * 1024 + k, 2)"
        "    * CAST(:open_s AS int))) * interval '1 second') AT TIME ZONE :zone AS t,"
        "  CAST(floor(pg_temp.uniform(fm.m * 1024 + k, 3) * CAST(:shapes AS int)) AS int) AS s"
        " FROM fill_member fm, generate_series(1, fm.n) AS k"
    )
    run("ALTER TABLE fill_order ADD PRIMARY KEY (m, k)")
    run("ANALYZE fill_order")
    # Enrolled up to 30 days before the first order (or, with none, some day of the span),
    # in this tier window.
    run(
        "UPDATE fill_member fm SET enrolled_at = greatest("
        "  CAST(:window_start AS timestamptz) + interval '1 hour',"
        "  coalesce((SELECT min(t) FROM fill_order o WHERE o.m = fm.m),"
        "   (CAST(:first_day AS date) + CAST(:opens * interval '1 second' AS interval))"
        "    AT TIME ZONE :zone + CAST(floor(pg_temp.uniform(fm.m, 5) * CAST(:days AS int))"
        "    * interval '1 day' AS interval))"
        "  - floor(pg_temp.uniform(fm.m, 4) * 30 * 86400) * interval '1 second')"
    )


def _plan_tiers(run: Callable[..., Any], reached: str) -> None:
    """An order is placed at the tier its member's earlier orders reached, and its points
    depend on that tier: so walk each member's orders, a rise at a time (the first order
    after which the tier reached is above the next order's), until none rises."""
    while (
        run(
            "WITH walk AS (SELECT o.m, o.k,"
            "   lead(o.level) OVER (PARTITION BY o.m ORDER BY o.k) AS next_level,"
            "   sum(sh.points) OVER (PARTITION BY o.m ORDER BY o.k) AS progress"
            "  FROM fill_order o JOIN fill_shape sh ON sh.s = o.s AND sh.level = o.level),"
            " rise AS (SELECT DISTINCT ON (m) m, k, reached FROM"
            f"  (SELECT m, k, next_level, {reached} AS reached FROM walk) AS w"
            "  WHERE reached > next_level ORDER BY m, k)"
            " UPDATE fill_order o SET level = rise.reached FROM rise"
            " WHERE o.m = rise.m AND o.k > rise.k AND o.level < rise.reached"
        ).rowcount
        > 0
    ):
        pass


def _plan_facts(run: Callable[..., Any], reached: str) -> None:
    """Each order's figures at its tier, the tier and visits after it posts, and its number
    in time order (its id: fill-o0000001 is the first)."""
    run(
        "CREATE TEMP TABLE fill_fact AS"
        " SELECT g.*, 'fill-o' || lpad(CAST(g.i AS text), 7, '0') AS ext FROM"
        " (SELECT f.*, row_number() OVER (ORDER BY f.t, f.m) AS i FROM"
        f"  (SELECT w.*, {reached} AS level_after FROM"
        "   (SELECT o.m, o.k, o.t, o.s, o.level, sh.points, sh.spend, sh.visit,"
        "     sum(sh.points) OVER (PARTITION BY o.m ORDER BY o.k) AS progress,"
        "     sum(CAST(sh.visit AS int)) OVER (PARTITION BY o.m ORDER BY o.k) AS visits_after,"
        "     to_char(o.t AT TIME ZONE :zone, 'YYYY-MM-DD') AS day"
        "    FROM fill_order o JOIN fill_shape sh ON sh.s = o.s AND sh.level = o.level) AS w)"
        "  AS f) AS g"
    )
    run("CREATE UNIQUE INDEX ON fill_fact (i)")
    run("CREATE UNIQUE INDEX ON fill_fact (m, k)")
    run("CREATE UNIQUE INDEX ON fill_fact (ext)")
    run("ANALYZE fill_fact")
    run("DROP TABLE fill_order")


def _plan_events(run: Callable[..., Any]) -> None:
    """Every event of every member, numbered in the member's sequence as it happened: an
    order's in the order it writes them, a reward's lapse when its days have passed."""
    rewarded = "visit AND visits_after % :goal = 0"
    run(
        "CREATE TEMP TABLE fill_event AS"
        " SELECT e.*, row_number() OVER (PARTITION BY e.m ORDER BY e.at, e.k, e.kind) AS seq"
        " FROM (SELECT m, enrolled_at AS at, 0 AS k, 0 AS kind FROM fill_member"
        "  UNION ALL SELECT m, t, k, 1 FROM fill_fact"
        "  UNION ALL SELECT m, t, k, 2 FROM fill_fact WHERE points > 0"
        "  UNION ALL SELECT m, t, k, 3 FROM fill_fact WHERE visit"
        f"  UNION ALL SELECT m, t, k, 4 FROM fill_fact WHERE {rewarded}"
        "  UNION ALL SELECT m, t, k, 5 FROM fill_fact WHERE level_after > level"
        "  UNION ALL SELECT m, t + :valid, k, 6 FROM fill_fact"
        f"   WHERE {rewarded} AND t + :valid <= :now) AS e"
    )
    run("CREATE INDEX ON fill_event (at)")
    run("ANALYZE fill_event")


def _write_members(run: Callable[..., Any]) -> None:
    """Members in the order they enrolled, in their final state; then their accounts (and
    `earned`) in the order of their first posting, with their balances."""
    # next_due_at: what a request leaves (services/due.py): after its member's last order,
    # the earliest of its first lot's expiry and the rewards then still to lapse. The worker
    # lapses those later without moving it, so it may be past: the next request looks again.
    run(
        "INSERT INTO members (env_id, external_id, enrolled_at, tier, progress, visits, punches,"
        "  window_start, window_end, last_activity_at, inactivity_due_at, event_seq,"
        "  next_due_at)"
        " SELECT :env, fm.ext, fm.enrolled_at,"
        "  (CAST(:levels AS text[]))[coalesce(a.level, 0) + 1],"
        "  coalesce(a.progress, 0), coalesce(a.visits, 0),"
        "  CAST('{' || :card || ': ' || (coalesce(a.visits, 0) % :goal) || '}' AS json),"
        "  :window_start, :window_end, a.active, NULL, e.seq,"
        "  least(((a.first_lot AT TIME ZONE :zone) + make_interval(months => :months))"
        "   AT TIME ZONE :zone, r.lapse)"
        " FROM fill_member fm"
        " LEFT JOIN (SELECT m, max(level_after) AS level, sum(points) AS progress,"
        "   sum(CAST(visit AS int)) AS visits, max(t) FILTER (WHERE points > 0) AS active,"
        "   min(t) FILTER (WHERE points > 0) AS first_lot"
        "  FROM fill_fact GROUP BY m) AS a ON a.m = fm.m"
        " LEFT JOIN (SELECT m, min(t + :valid) AS lapse FROM"
        "   (SELECT m, t, visit, visits_after, max(t) OVER (PARTITION BY m) AS last"
        "    FROM fill_fact) AS x"
        "  WHERE visit AND visits_after % :goal = 0 AND t + :valid > last GROUP BY m) AS r"
        "  ON r.m = fm.m"
        " JOIN (SELECT m, max(seq) AS seq FROM fill_event GROUP BY m) AS e ON e.m = fm.m"
        " ORDER BY fm.enrolled_at, fm.m"
    )
    run(
        "UPDATE fill_member fm SET id = m.id FROM members m"
        " WHERE m.env_id = :env AND m.external_id = fm.ext"
    )
    run(
        "INSERT INTO ledger_accounts (env_id, asset, name, balance)"
        " VALUES (:env, :asset, :earned, NULL) ON CONFLICT DO NOTHING"
    )
    run(
        "INSERT INTO ledger_accounts (env_id, asset, name, balance)"
        " SELECT :env, :asset, 'member:' || fm.id, a.total FROM fill_member fm"
        " JOIN (SELECT m, sum(points) AS total, min(t) AS first FROM fill_fact"
        "  WHERE points > 0 GROUP BY m) AS a ON a.m = fm.m"
        " ORDER BY a.first, fm.m"
    )
    run(
        "UPDATE fill_member fm SET account_id = a.id FROM ledger_accounts a"
        " WHERE a.env_id = :env AND a.asset = :asset AND a.name = 'member:' || fm.id"
    )
    run("ANALYZE fill_member")


def _write_batch(
    run: Callable[..., Any], lo: int, hi: int, t_lo: datetime | None, t_hi: datetime | None
) -> None:
    """Orders lo..hi-1 (in time order) and everything that happened from t_lo to t_hi."""

    def when(column: str) -> str:
        return (
            f"{column} >= coalesce(CAST(:t_lo AS timestamptz), '-infinity')"
            f" AND {column} < coalesce(CAST(:t_hi AS timestamptz), 'infinity')"
        )

    batch = {"lo": lo, "hi": hi, "t_lo": t_lo, "t_hi": t_hi}
    run(
        "WITH placed AS (INSERT INTO orders (env_id, external_id, member_id, state, at,"
        "  version_id, tier, document, refunded, line_discounts, outcome, points, spend, visit,"
        "  visit_day, closed_at, close_seq, post_state, due_at, posted_points, posted_visit,"
        "  posted_spend, posted_window, window_points, window_visit, window_spend)"
        " SELECT :env, f.ext, fm.id, 'closed', f.t, :version,"
        "  (CAST(:levels AS text[]))[f.level + 1], CAST(sh.document AS json),"
        "  CAST('{}' AS json), CAST(sh.line_discounts AS json),"
        "  CAST(replace(sh.outcome, :day_mark, '\"visit_day\": \"' || f.day || '\"') AS json),"
        "  f.points, f.spend, f.visit, CASE WHEN f.visit THEN f.day END, f.t,"
        "  nextval('order_close_seq'), 'posted', f.t, f.points, f.visit, f.spend,"
        "  :window_start, f.points, CAST(f.visit AS int), f.spend"
        " FROM fill_fact f JOIN fill_member fm ON fm.m = f.m"
        "  JOIN fill_shape sh ON sh.s = f.s AND sh.level = f.level"
        " WHERE f.i >= :lo AND f.i < :hi ORDER BY f.i"
        " RETURNING id, member_id, at, points)"
        " INSERT INTO lots (env_id, member_id, order_id, state, amount, remaining, due_at,"
        "  posted_at, expires_at)"
        " SELECT :env, member_id, id, 'posted', points, points, NULL, at,"
        "  ((at AT TIME ZONE :zone) + make_interval(months => :months)) AT TIME ZONE :zone"
        " FROM placed WHERE points > 0 ORDER BY id",
        **batch,
    )
    run(
        "WITH txn AS (INSERT INTO ledger_transactions (env_id, asset, kind, reference, at)"
        " SELECT :env, :asset, 'earn', 'order:' || f.ext, f.t FROM fill_fact f"
        " WHERE f.i >= :lo AND f.i < :hi AND f.points > 0 ORDER BY f.i"
        " RETURNING id, reference)"
        " INSERT INTO ledger_postings (transaction_id, account_id, amount)"
        " SELECT txn.id, CASE WHEN leg.n = 1 THEN earned.id ELSE fm.account_id END,"
        "  CASE WHEN leg.n = 1 THEN -f.points ELSE f.points END"
        " FROM txn JOIN fill_fact f ON f.ext = substr(txn.reference, 7)"
        "  JOIN fill_member fm ON fm.m = f.m"
        "  CROSS JOIN (VALUES (1), (2)) AS leg(n)"
        "  CROSS JOIN (SELECT id FROM ledger_accounts"
        "   WHERE env_id = :env AND asset = :asset AND name = :earned) AS earned"
        " ORDER BY txn.id, leg.n",
        **batch,
    )
    run(
        "INSERT INTO rewards (env_id, member_id, alias, reward_id, state, issued_at, expires_at,"
        "  order_id, source)"
        " SELECT :env, fm.id, NULL, :reward,"
        "  CASE WHEN f.t + :valid <= :now THEN 'expired' ELSE 'available' END,"
        "  f.t, f.t + :valid, NULL, 'punch_card'"
        " FROM fill_fact f JOIN fill_member fm ON fm.m = f.m"
        " WHERE f.i >= :lo AND f.i < :hi AND f.visit AND f.visits_after % :goal = 0"
        " ORDER BY f.i",
        **batch,
    )
    run(
        "INSERT INTO tier_changes (member_id, at, tier, reason)"
        " SELECT member_id, at, tier, reason FROM"
        " (SELECT fm.id AS member_id, fm.enrolled_at AS at, (CAST(:levels AS text[]))[1] AS tier,"
        "   'enrolled' AS reason, fm.m, 0 AS k FROM fill_member fm"
        f"  WHERE {when('fm.enrolled_at')}"
        "  UNION ALL"
        "  SELECT fm.id, f.t, (CAST(:levels AS text[]))[f.level_after + 1], 'threshold', f.m, f.k"
        "  FROM fill_fact f JOIN fill_member fm ON fm.m = f.m"
        "  WHERE f.i >= :lo AND f.i < :hi AND f.level_after > f.level) AS x"
        " ORDER BY at, m, k",
        **batch,
    )
    run(
        "INSERT INTO idempotency_keys (env_id, api_key_id, key, fingerprint, state,"
        "  locked_until, status_code, response, created_at, expires_at)"
        " SELECT :env, :key_id, key, encode(sha256(convert_to(key, 'UTF8')), 'hex'), 'done',"
        "  at, 201, :sealed || pg_temp.noise(12 + bytes + 16), at, at + :ttl FROM"
        " (SELECT fm.ext AS key, fm.enrolled_at AS at, 60 AS bytes, fm.m, 0 AS k"
        "   FROM fill_member fm"
        f"  WHERE {when('fm.enrolled_at')} AND fm.enrolled_at > :now - :ttl"
        "  UNION ALL"
        "  SELECT 'place-' || f.ext, f.t, sh.answer_bytes, f.m, f.k"
        "  FROM fill_fact f JOIN fill_shape sh ON sh.s = f.s AND sh.level = f.level"
        "  WHERE f.i >= :lo AND f.i < :hi AND f.t > :now - :ttl) AS x"
        " ORDER BY at, m, k",
        **batch,
    )
    run(
        "INSERT INTO outbox (env_id, member_id, member_seq, type, payload, created_at)"
        " SELECT :env, fm.id, e.seq, (CAST(:types AS text[]))[e.kind + 1], CAST(CASE e.kind"
        "  WHEN 0 THEN '{\"member\": ' || to_json(fm.ext) || ', \"tier\": '"
        "   || to_json((CAST(:levels AS text[]))[1]) || '}'"
        "  WHEN 1 THEN replace(replace(sh.evaluated, :order_mark, to_json(f.ext)::text),"
        "   :day_mark, '\"visit_day\": \"' || f.day || '\"')"
        '  WHEN 2 THEN \'{"points": \' || f.points || \', "paid_debt": 0, "order": \''
        "   || to_json(f.ext) || '}'"
        "  WHEN 3 THEN '{\"punch_card\": ' || :card || ', \"count\": '"
        "   || (f.visits_after % :goal) || '}'"
        "  WHEN 4 THEN '{\"reward\": ' || to_json(CAST(:reward AS text))"
        '   || \', "alias": null, "source": "punch_card"}\''
        "  WHEN 5 THEN '{\"from\": ' || to_json((CAST(:levels AS text[]))[f.level + 1])"
        "   || ', \"to\": ' || to_json((CAST(:levels AS text[]))[f.level_after + 1]) || '}'"
        "  ELSE '{\"reward\": ' || to_json(CAST(:reward AS text)) || ', \"alias\": null}'"
        "  END AS json), e.at"
        " FROM fill_event e JOIN fill_member fm ON fm.m = e.m"
        "  LEFT JOIN fill_fact f ON f.m = e.m AND f.k = e.k"
        "  LEFT JOIN fill_shape sh ON sh.s = f.s AND sh.level = f.level"
        f" WHERE {when('e.at')}"
        " ORDER BY e.at, e.m, e.seq",
        **batch,
    )


def _move_cursor(run: Callable[..., Any]) -> None:
    """Every enabled endpoint has had every event (its cursor past the last, each counted
    as delivered at its first try), as if the sender had kept up all year."""
    run(
        "UPDATE webhook_endpoints AS w SET cursor_tx = last.tx, cursor_id = last.id,"
        "  delivered = w.delivered + (SELECT count(*) FROM fill_event)"
        " FROM (SELECT tx, id FROM outbox WHERE env_id = :env"
        "  ORDER BY tx DESC, id DESC LIMIT 1) AS last"
        " WHERE w.env_id = :env AND w.state = 'enabled' AND w.deleted_at IS NULL"
    )
    run("DROP TABLE fill_event, fill_fact, fill_member, fill_shape")


# --- the fill checked against the real path ----------------------------------------------


# A member's rows, comparable between two environments: without ids, environments, the
# member's own id (its account's name has it) or the writing transaction; in written order.
MEMBER_ROWS = {
    "members": "SELECT to_jsonb(m) - 'id' - 'env_id' FROM members m WHERE m.id = :member",
    "orders": "SELECT to_jsonb(o) - 'id' - 'env_id' - 'member_id' - 'version_id' - 'close_seq'"
    " FROM orders o WHERE o.member_id = :member ORDER BY o.at, o.external_id",
    "lots": "SELECT to_jsonb(l) - 'id' - 'env_id' - 'member_id' - 'order_id'"
    " || jsonb_build_object('order', o.external_id)"
    " FROM lots l LEFT JOIN orders o ON o.id = l.order_id WHERE l.member_id = :member"
    " ORDER BY l.posted_at, o.external_id",
    "ledger": "SELECT to_jsonb(t) - 'id' - 'env_id' || jsonb_build_object('postings',"
    "  (SELECT jsonb_agg(jsonb_build_array(replace(a.name, 'member:' || :member, 'member'),"
    "    p.amount, a.balance) ORDER BY p.id)"
    "   FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id"
    "   WHERE p.transaction_id = t.id))"
    " FROM ledger_transactions t WHERE t.env_id = :env AND t.reference IN"
    "  (SELECT 'order:' || external_id FROM orders WHERE member_id = :member)"
    " ORDER BY t.at, t.reference",
    "outbox": "SELECT to_jsonb(x) - 'id' - 'env_id' - 'member_id' - 'tx' FROM outbox x"
    " WHERE x.member_id = :member ORDER BY x.member_seq",
    "tier_changes": "SELECT to_jsonb(c) - 'id' - 'member_id' FROM tier_changes c"
    " WHERE c.member_id = :member ORDER BY c.at, c.id",
    "rewards": "SELECT to_jsonb(r) - 'id' - 'env_id' - 'member_id' FROM rewards r"
    " WHERE r.member_id = :member ORDER BY r.issued_at, r.id",
}
# Members whose history the check replays: the busiest, some at the top tier, some whose
# reward lapsed, one who never ordered.
REPLAYED = (
    "SELECT external_id FROM members WHERE env_id = :env AND external_id IN ("
    " (SELECT external_id FROM members WHERE env_id = :env ORDER BY visits DESC, id LIMIT 2)"
    " UNION (SELECT external_id FROM members WHERE env_id = :env AND tier = :top"
    "  ORDER BY id LIMIT 2)"
    " UNION (SELECT m.external_id FROM members m JOIN rewards r ON r.member_id = m.id"
    "  WHERE m.env_id = :env AND r.state = 'expired' ORDER BY m.id LIMIT 2)"
    " UNION (SELECT external_id FROM members WHERE env_id = :env AND visits = 0"
    "  ORDER BY id LIMIT 1)) ORDER BY id"
)


def check(console: Console, members: int, orders: int) -> dict[str, Any]:
    """Fill a small database, then place some of its members' history again through the real
    API, in a named sandbox whose clock is moved to each enrolment and order (and at last to
    the fill's now): every row the fill wrote for them must be one the real path wrote, ids
    aside. Idempotency rows are not compared: a sandbox's keys are kept by the wall clock."""
    env = {"PUNCHCARD_WEBHOOK_ALLOW_PRIVATE": "1", "PUNCHCARD_LOG_LEVEL": "warning"}
    program = parse_program(PROGRAM.read_text())
    span = Span.of(program, datetime.now(UTC))
    filler = Filler(span, order_counts(members, orders, span.days), console)
    receiver = Receiver()
    with database("postgres") as url:
        cli(env, "db", "upgrade", "--database", url)
        keys = json.loads(cli(env, "tenant", "create", "Check", "--json", "--database", url))
        base, server = serve(url, env)
        try:
            setup(base, keys["live_key"], receiver, [], url)
        finally:
            stop([server])
        filler(url, keys)
        engine = sa.create_engine(url)
        base, server = serve(url, env)
        try:
            with engine.connect() as conn:
                live = conn.execute(
                    sa.text("SELECT env_id FROM api_keys WHERE position(id || '_' IN :key) = 1"),
                    {"key": keys["live_key"]},
                ).scalar_one()
                names = list(
                    conn.execute(
                        sa.text(REPLAYED), {"env": live, "top": program.tiers.levels[-1].id}
                    ).scalars()
                )
            sandbox, placed = _replay(engine, base, keys["live_key"], live, names, filler, span)
            found = []
            with engine.connect() as conn:
                for name in names:
                    fill, real = (_member_rows(conn, env_id, name) for env_id in (live, sandbox))
                    for table, rows in fill.items():
                        if rows != real[table]:
                            pair = next(
                                ((a, b) for a, b in zip(rows, real[table], strict=False) if a != b),
                                (rows[len(real[table]) :][:1], real[table][len(rows) :][:1]),
                            )
                            found.append(
                                {"member": name, "table": table, "fill": pair[0], "real": pair[1]}
                            )
        finally:
            stop([server])
            engine.dispose()
            receiver.close()
    return {"members": names, "requests": placed, "mismatches": found}


def _replay(
    engine: sa.Engine,
    base: str,
    key: str,
    live: str,
    names: list[str],
    filler: Filler,
    span: Span,
) -> tuple[str, int]:
    """The members' enrolments and orders, in time order, in a new named sandbox; returns
    its id and how many requests were placed."""
    by_document = {shape.document: shape.body for shape in filler.shapes}
    steps: list[tuple[datetime, str, dict[str, Any], str]] = []  # when, what, body, key
    with engine.connect() as conn:
        for name in names:
            enrolled = conn.execute(
                sa.text(
                    "SELECT enrolled_at FROM members WHERE env_id = :env AND external_id = :name"
                ),
                {"env": live, "name": name},
            ).scalar_one()
            steps.append((enrolled, "/v1/members", {"id": name}, name))
            for external_id, at, document in conn.execute(
                sa.text(
                    "SELECT o.external_id, o.at, CAST(o.document AS text) FROM orders o"
                    " JOIN members m ON m.id = o.member_id"
                    " WHERE m.env_id = :env AND m.external_id = :name"
                ),
                {"env": live, "name": name},
            ):
                body = {**by_document[document], "id": external_id, "member": name}
                steps.append(
                    (at, "/v1/orders", {**body, "at": at.isoformat()}, f"place-{external_id}")
                )
    steps.sort(key=lambda step: (step[0], step[1] != "/v1/members"))
    start = window_bounds(
        parse_program(PROGRAM.read_text()),
        datetime.combine(span.first, datetime.min.time(), span.zone),
    )[0] + timedelta(minutes=30)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        sandbox = http.post(
            "/v1/sandboxes",
            json={"name": "scale check", "start": start.isoformat(), "copy_programs": False},
            headers={"Idempotency-Key": "sandbox"},
        )
        sandbox.raise_for_status()
        made = sandbox.json()
        http.headers["Authorization"] = f"Bearer {made['key']}"
        http.post(
            "/v1/programs/versions",
            json={"source": PROGRAM.read_text(), "activate": True},
            headers={"Idempotency-Key": "program"},
        ).raise_for_status()
        for n, (at, path, body, key) in enumerate([*steps, (span.now, "", {}, "")]):
            http.post(
                "/v1/clock", json={"to": at.isoformat()}, headers={"Idempotency-Key": f"c{n}"}
            ).raise_for_status()
            if path:
                http.post(path, json=body, headers={"Idempotency-Key": key}).raise_for_status()
    return str(made["id"]), len(steps)


def _member_rows(conn: sa.Connection, env: str, name: str) -> dict[str, list[Any]]:
    member = conn.execute(
        sa.text("SELECT id FROM members WHERE env_id = :env AND external_id = :name"),
        {"env": env, "name": name},
    ).scalar_one()
    return {
        table: list(conn.execute(sa.text(sql), {"member": member, "env": env}).scalars())
        for table, sql in MEMBER_ROWS.items()
    }


# --- the two runs --------------------------------------------------------------------------


def with_existing(
    members: list[str], bodies: list[dict[str, Any]], counts: list[int]
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Every other member of the chain (in the order they enrol) is one who exists already:
    a member of the fill, picked in proportion to how often it orders, each at most once.
    Returns the new members, the existing ones, and the orders, placed by them."""
    rng = random.Random(f"{SEED}:existing")
    chosen: dict[int, None] = {}
    wanted = len(members) // 2
    while len(chosen) < wanted:
        picks = rng.choices(range(len(counts)), weights=counts, k=wanted - len(chosen))
        chosen.update(dict.fromkeys(picks))
    existing = [member_name(i) for i in chosen]
    as_existing = dict(zip(members[1::2], existing, strict=True))
    placed = [
        {**body, "member": as_existing.get(body["member"], body["member"])} for body in bodies
    ]
    return members[0::2], existing, placed


# name, what it reads from a run's result, whether more is better
FIGURES: list[tuple[str, Callable[[dict[str, Any]], float | None], bool]] = [
    ("posted orders/s (census pass)", lambda r: r["posted_per_s"], True),
    ("round trips per order", lambda r: r["census"]["round_trips"]["total"], False),
    ("statements per order", lambda r: r["census"]["statements"]["total"], False),
    ("rows written per order", lambda r: r["census"]["rows_written"], False),
    ("WAL KB per order", lambda r: r["census"]["wal_kb"], False),
    ("  of which full-page images", lambda r: r["census"]["wal_full_page_kb"], False),
    ("PostgreSQL CPU ms per order", lambda r: r["cpu_ms_per_order"]["postgres"], False),
    ("API CPU ms per order", lambda r: r["cpu_ms_per_order"]["api"], False),
    ("worker CPU ms per order", lambda r: r["cpu_ms_per_order"]["worker"], False),
]


def compare(empty: dict[str, Any], filled: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure on both databases, filled / empty, and whether the filled database's cost
    is within TARGET of the empty one's (for orders/s: its speed no more than that below)."""
    rows = []
    for name, read, more_is_better in FIGURES:
        a, b = read(empty), read(filled)
        ratio = round(b / a, 3) if a and b is not None else None
        within = None
        if ratio is not None:
            within = ratio >= 1 / (1 + TARGET) if more_is_better else ratio <= 1 + TARGET
        rows.append({"figure": name, "empty": a, "filled": b, "ratio": ratio, "within": within})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders each run places")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="`punchcard worker` processes")
    parser.add_argument("--fill-members", type=int, default=100_000)
    parser.add_argument("--fill-orders", type=int, default=1_000_000)
    parser.add_argument(
        "--check-members", type=int, default=2_000, help="the check's fill (0: no check)"
    )
    parser.add_argument("--check-orders", type=int, default=20_000)
    args = parser.parse_args()
    console = Console(width=max(Console().width, 160))
    program = parse_program(PROGRAM.read_text())
    check_program(program)
    report: dict[str, Any] = {"bench": "scale"}
    if args.check_members:
        console.print(
            f"[bold]check[/]: a fill of {args.check_members:,} members and"
            f" {args.check_orders:,} orders against the real path"
        )
        try:
            report["check"] = check(console, args.check_members, args.check_orders)
        except Exception as error:  # a benchmark reports, it never fails a build
            report["check"] = {"failed": str(error)}
    span = Span.of(program, datetime.now(UTC))
    counts = order_counts(args.fill_members, args.fill_orders, span.days)
    members, bodies = traffic(args.orders)
    new, existing, bodies = with_existing(members, bodies, counts)
    run = Pass("census", args.clients, len(bodies), census=True)
    filler = Filler(span, counts, console)
    results: dict[str, dict[str, Any]] = {}
    for name, work, fill in (
        ("empty", (new + existing, bodies), None),
        ("filled", (new, bodies), filler),
    ):
        console.print(f"[bold]{name} database[/]: {len(bodies)} orders, {args.clients} clients")
        try:
            results[name] = measure("postgres", run, args.workers, work=work, fill=fill)
        except Exception as error:  # a benchmark reports, it never fails a build
            results[name] = {"failed": str(error)}
    taken = set(existing)
    report |= {
        "orders": len(bodies),
        "orders_by_existing_members": sum(1 for body in bodies if body["member"] in taken),
        "fill": {
            "members": args.fill_members,
            "orders": args.fill_orders,
            "days": span.days,
            "first_day": span.first.isoformat(),
            "rows": filler.rows,
            "seconds": {k: round(v, 1) for k, v in filler.seconds.items()},
            "seconds_by_table": {k: round(v, 1) for k, v in filler.by_table.items()},
            "audit_passed": filler.audit_ok,
        },
        "results": results,
    }
    if all("failed" not in r for r in results.values()):
        report["comparison"] = compare(results["empty"], results["filled"])
    print(json.dumps(report, default=str))
    show(console, report)


def show(console: Console, report: dict[str, Any]) -> None:
    checked = report.get("check")
    if checked is not None:
        if "failed" in checked:
            console.print(f"[red]The check failed: {checked['failed']}[/]")
        else:
            console.print(
                f"Check: {len(checked['members'])} members' {checked['requests']} enrolments"
                " and orders placed again through the API: "
                + ("every row as the fill wrote it" if not checked["mismatches"] else "")
            )
            for wrong in checked["mismatches"]:
                console.print(
                    f"[red]{wrong['member']} {wrong['table']}[/]: the fill wrote {wrong['fill']},"
                    f" the real path {wrong['real']}"
                )
    fill = report["fill"]
    console.print(
        f"Fill: {fill['members']:,} members, {fill['orders']:,} orders over {fill['days']} days"
        f" from {fill['first_day']}; seconds: {fill['seconds']}"
        f" (writing: {fill['seconds_by_table']});"
        f" the audit {'found nothing' if fill['audit_passed'] else '[red]did not pass[/]'}"
    )
    if fill["rows"]:
        console.print("Rows: " + ", ".join(f"{t} {n:,}" for t, n in fill["rows"].items()))
    for name, result in report["results"].items():
        if "failed" in result:
            console.print(f"[red]{name}: failed: {result['failed']}[/]")
    if "comparison" not in report:
        return
    table = Table(
        title=f"Cost per order: {report['orders']:,} orders"
        f" ({report['orders_by_existing_members']:,} by existing members),"
        f" empty database and {fill['members']:,} members with {fill['orders']:,} orders"
    )
    for column in ("figure", "empty", "filled", "filled / empty", f"within {TARGET:.0%}"):
        table.add_column(column)
    for row in report["comparison"]:
        within = {True: "yes", False: "[red]no[/]", None: ""}[row["within"]]
        table.add_row(
            row["figure"], str(row["empty"]), str(row["filled"]), str(row["ratio"]), within
        )
    console.print(table)


if __name__ == "__main__":
    main()
