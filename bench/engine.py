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


def measure(seconds: float = 3.0) -> dict[str, float]:
    program = parse_program(PROGRAM.read_text())
    # A Tuesday 15:00 in Chicago: inside the double-tuesday window, so promotions are checked in full.
    at = datetime(2026, 3, 10, 15, 0, tzinfo=timezone(timedelta(hours=-5)))
    order = Order(id="o1", at=at, **parse_order_parts(THREE_LINES))
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
    figures = measure()
    print(
        json.dumps({"bench": "engine", "order": "3 lines", "program": "burrito-rewards", **figures})
    )
    print(f"{'order':<10}{'evaluations/s':>16}")
    print(f"{'3 lines':<10}{figures['per_second']:>16,.0f}")


if __name__ == "__main__":
    main()
