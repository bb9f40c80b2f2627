"""Replay the synthetic chain through the engine in bulk: orders evaluated per second.

Parses the program once, builds engine orders from the generated operations and
evaluates each with the member's standing carried forward roughly (tier from this
calendar year's points, promotion uses, visits that day); refunds and voids are
re-evaluated as the service does. Prints a JSON line and a table; never fails a build.
Run: `make bench`, or `python bench/replay.py --orders 100000`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from punchcard.engine.evaluate import Allocation, Outcome, Standing, allocate, evaluate
from punchcard.engine.orders import Order, parse_order_parts
from punchcard.engine.programs import Program, parse_program
from punchcard.synthetic import operations
from punchcard.synthetic.operations import DEMO_PROGRAM

KEEP_ORDERS = timedelta(days=15)  # refunds come at most 13 days after an order closes


@dataclass(slots=True)
class Member:
    year: int = 0
    points: int = 0  # this calendar year's, for the tier (points metric, calendar_year window)
    uses: dict[str, int] = field(default_factory=dict)
    visit_day: date | None = None
    visits_that_day: int = 0


@dataclass(slots=True)
class Placed:
    member: Member
    order: Order
    allocation: Allocation
    outcome: Outcome | None = None  # None while open
    refunded: dict[str, int] = field(default_factory=dict)


class Replay:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.levels = sorted(program.tiers.levels, key=lambda level: level.threshold)
        self.members: dict[str, Member] = {}
        self.orders: dict[str, Placed] = {}
        self.kept: deque[tuple[datetime, str]] = deque()
        self.evaluations = self.lines = self.points = self.missed = self.promoted = 0

    def tier(self, member: Member, at: datetime) -> str:
        if at.astimezone(self.program.zone).year != member.year:
            return self.levels[0].id
        return [lv.id for lv in self.levels if lv.threshold <= member.points][-1]

    def place(self, body: dict[str, Any], at: datetime) -> None:
        member = self.members.setdefault(body["member"], Member())
        placed_at = datetime.fromisoformat(body["at"])
        order = Order(id=body["id"], at=placed_at, **parse_order_parts(body))
        placed = Placed(member, order, allocate(self.program, order))
        self.orders[order.id] = placed
        self.kept.append((at, order.id))
        self.lines += len(order.lines)
        if body.get("status", "closed") == "closed":
            self.close(placed)
        while self.kept and self.kept[0][0] < at - KEEP_ORDERS:
            self.orders.pop(self.kept.popleft()[1], None)

    def close(self, placed: Placed) -> None:
        member, order = placed.member, placed.order
        local = order.at.astimezone(self.program.zone)
        visits = member.visits_that_day if member.visit_day == local.date() else 0
        standing = Standing(
            tier=self.tier(member, order.at),
            promotion_uses=member.uses,
            other_visits_that_day=visits,
        )
        outcome = evaluate(self.program, order, placed.allocation, standing)
        self.evaluations += 1
        placed.outcome = outcome
        self.promoted += bool(outcome.promotions)
        self.gain(member, local, outcome.points)
        for promotion in outcome.promotions:
            member.uses[promotion] = member.uses.get(promotion, 0) + 1
        if outcome.visit:
            member.visit_day, member.visits_that_day = local.date(), visits + 1

    def gain(self, member: Member, local: datetime, points: int) -> None:
        if local.year != member.year:
            member.year, member.points = local.year, 0
        member.points += points
        self.points += points

    def refund(self, order_id: str, body: dict[str, Any]) -> None:
        placed = self.orders.get(order_id)
        if placed is None or placed.outcome is None:
            self.missed += 1
            return
        if body.get("all"):
            placed.refunded = {line.id: line.qty for line in placed.order.lines}
        for item in body.get("lines", []):
            placed.refunded[item["line"]] = placed.refunded.get(item["line"], 0) + item["qty"]
        before = placed.outcome
        standing = Standing(
            tier=self.tier(placed.member, placed.order.at),
            held_promotions=before.promotions,
            held_visit=before.visit,
            gains=False,
        )
        after = evaluate(self.program, placed.order, placed.allocation, standing, placed.refunded)
        self.evaluations += 1
        placed.outcome = after
        self.gain(
            placed.member,
            placed.order.at.astimezone(self.program.zone),
            after.points - before.points,
        )

    def void(self, order_id: str) -> None:
        placed = self.orders.pop(order_id, None)
        if placed is None or placed.outcome is None:
            self.missed += 1
            return
        local = placed.order.at.astimezone(self.program.zone)
        self.gain(placed.member, local, -placed.outcome.points)

    def apply(self, kind: str, path: str, body: dict[str, Any] | None, at: datetime) -> bool:
        """Apply one operation; True when it was an order placed."""
        if kind == "place_order":
            assert body is not None
            self.place(body, at)
            return True
        order_id = path.split("/")[3] if path.startswith("/v1/orders/") else ""
        if kind == "close_order":
            placed = self.orders.get(order_id)
            if placed is None:
                self.missed += 1
            else:
                self.close(placed)
        elif kind == "refund":
            assert body is not None
            self.refund(order_id, body)
        elif kind == "void":
            self.void(order_id)
        return False


def run(orders: int, seed: int, console: Console) -> dict[str, Any]:
    program = parse_program(DEMO_PROGRAM.read_text())
    replay = Replay(program)
    engine_s = engine_cpu_s = 0.0
    count = placed = 0
    started = time.perf_counter()
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("replaying orders", total=orders)
        for op in operations(seed=seed, orders=orders):
            t0, c0 = time.perf_counter(), time.thread_time()
            placed += replay.apply(op.kind, op.path, op.body, op.at)
            engine_s += time.perf_counter() - t0
            engine_cpu_s += time.thread_time() - c0  # on a shared machine, CPU time is steadier
            count += 1
            if not count % 1000:
                progress.update(task, completed=placed)
        progress.update(task, completed=placed)
    total_s = time.perf_counter() - started
    return {
        "bench": "replay",
        "seed": seed,
        "orders": orders,
        "lines": replay.lines,
        "operations": count,
        "evaluations": replay.evaluations,
        "points": replay.points,
        "orders_with_a_promotion": replay.promoted,
        "follow_ups_missed": replay.missed,
        "engine_seconds": round(engine_s, 3),
        "engine_cpu_seconds": round(engine_cpu_s, 3),
        "total_seconds": round(total_s, 3),
        "orders_per_second": round(orders / engine_s) if engine_s else 0,
        "orders_per_cpu_second": round(orders / engine_cpu_s) if engine_cpu_s else 0,
        "end_to_end_orders_per_second": round(orders / total_s) if total_s else 0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        figures = run(args.orders, args.seed, console)
    except Exception:  # a benchmark reports, it never fails a build
        traceback.print_exc()
        print(json.dumps({"bench": "replay", "error": traceback.format_exc(limit=1)}))
        return
    print(json.dumps(figures))
    table = Table(title=f"Replay of {figures['orders']:,} synthetic orders through the engine")
    for column in (
        "orders",
        "lines",
        "evaluations",
        "engine s",
        "orders/s (engine)",
        "orders/CPU s (engine)",
        "total s",
        "orders/s (with generating)",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{figures['orders']:,}",
        f"{figures['lines']:,}",
        f"{figures['evaluations']:,}",
        f"{figures['engine_seconds']:,.1f}",
        f"{figures['orders_per_second']:,}",
        f"{figures['orders_per_cpu_second']:,}",
        f"{figures['total_seconds']:,.1f}",
        f"{figures['end_to_end_orders_per_second']:,}",
    )
    Console(highlight=False, width=max(console.width, 140)).print(table)


if __name__ == "__main__":
    sys.exit(main())
