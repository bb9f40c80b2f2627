"""Order evaluations per second on one core: allocate + evaluate a typical 3-line order.

Prints a JSON line and a short table; it never fails a build. Run: `make bench`.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from punchcard.engine.evaluate import Standing, allocate, evaluate
from punchcard.engine.orders import Order, parse_order_parts
from punchcard.engine.programs import parse_program

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "src" / "punchcard" / "demo" / "burrito-rewards.yaml"
THREE_LINES = {
    "lines": [
        {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 2, "unit_price": "9.50",
         "modifiers": [{"sku": "GUAC", "category": "add_on", "qty": 1, "unit_price": "2.00"}]},
        {"id": "l2", "sku": "CHIPS", "category": "side", "qty": 1, "unit_price": "3.25"},
        {"id": "l3", "sku": "BEER", "category": "alcohol", "qty": 1, "unit_price": "6.00"},
    ],
    "discounts": [{"amount": "1.00"}],
    "tax": "2.10",
    "tip": "3.00",
}  # fmt: skip


def twenty_lines() -> dict[str, object]:
    lines = [
        {
            "id": f"l{n}",
            "sku": f"SKU{n % 7}",
            "category": ("burrito", "side", "drink", "alcohol")[n % 4],
            "qty": 1 + n % 3,
            "unit_price": f"{3 + n % 9}.{n % 10}5",
            "modifiers": [{"sku": "GUAC", "category": "add_on", "qty": 1, "unit_price": "2.00"}]
            if n % 5 == 0
            else [],
        }
        for n in range(20)
    ]
    return {
        "lines": lines,
        "discounts": [{"amount": "3.00"}, {"amount": "1.00", "line": "l3"}],
        "tax": "4.20",
    }


def busy_program(base: str) -> str:
    """The example program with 50 promotions and 50 item rules more."""
    promotions = "\n".join(
        f"  - {{id: promo-{n}, starts: 2026-01-01T00:00:00, ends: 2027-01-01T00:00:00, days: [tue, wed], "
        f'hours: {{from: "{8 + n % 10:02d}:00", to: "{18 + n % 5:02d}:00"}}, multiplier: 1.{n % 9 + 1}, '
        f'min_spend: "{n % 20}.00", limit_per_member: {n + 1}}}'
        for n in range(50)
    )
    bonuses = "\n".join(
        f"  - {{id: bonus-{n}, match: {{skus: [SKU{n % 7}], categories: [cat{n}]}}, points_per_unit: {n % 5 + 1}, "
        f"max_units_per_order: {n % 4 + 1}}}"
        for n in range(50)
    )
    return base.replace("promotions:\n", f"promotions:\n{promotions}\n", 1).replace(
        "item_bonuses:\n", f"item_bonuses:\n{bonuses}\n", 1
    )


def measure(order_data: dict[str, object], source: str, seconds: float = 3.0) -> dict[str, float]:
    program = parse_program(source)
    # A Tuesday 15:00 in Chicago: inside the double-tuesday window, so promotions are checked in full.
    at = datetime(2026, 3, 10, 15, 0, tzinfo=timezone(timedelta(hours=-5)))
    order = Order(id="o1", at=at, **parse_order_parts(order_data))
    standing = Standing(tier="gold")
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(500):
            evaluate(program, order, allocate(program, order), standing)
        count += 500
    elapsed = time.perf_counter() - started
    return {
        "evaluations": count,
        "seconds": round(elapsed, 3),
        "per_second": round(count / elapsed),
    }


def main() -> None:
    base = PROGRAM.read_text()
    cases = [
        ("3 lines", THREE_LINES, "burrito-rewards", base),
        ("20 lines", twenty_lines(), "burrito-rewards", base),
        ("3 lines", THREE_LINES, "50 promotions + 50 item rules", busy_program(base)),
        ("20 lines", twenty_lines(), "50 promotions + 50 item rules", busy_program(base)),
    ]
    rows = []
    for order, data, program, source in cases:
        figures = measure(data, source)
        rows.append((order, program, figures["per_second"]))
        print(json.dumps({"bench": "engine", "order": order, "program": program, **figures}))
    print(f"{'order':<10}{'program':<32}{'evaluations/s':>16}")
    for order, program, per_second in rows:
        print(f"{order:<10}{program:<32}{per_second:>16,.0f}")


if __name__ == "__main__":
    main()
