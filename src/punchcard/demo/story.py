"""A small loyalty story on the example program, printed as balances and an explanation."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from punchcard.engine.money import format_money
from punchcard.services.loyalty import Loyalty
from punchcard.services.programs import create_environment

BURRITO = {
    "id": "l1",
    "sku": "BURR",
    "category": "burrito",
    "qty": 2,
    "unit_price": "9.50",
    "modifiers": [{"sku": "GUAC", "category": "add_on", "qty": 1, "unit_price": "2.00"}],
}
BEER = {"id": "l2", "sku": "BEER", "category": "alcohol", "qty": 1, "unit_price": "6.00"}


def run_demo(engine: sa.Engine, program: str, console: Console, start: datetime) -> None:
    app = Loyalty(engine, create_environment(engine, "demo", start, clock=start))
    app.publish(program, start)
    now = start
    for member in ("alice", "bob"):
        app.enroll({"member": member}, now)
    app.place_order(
        {
            "id": "o1",
            "member": "alice",
            "lines": [BURRITO, BEER],
            "discounts": [{"amount": "1.00"}],
            "tax": "2.10",
            "tip": "3.00",
        },
        now,
    )
    app.run_due(now)
    for day in range(1, 5):
        now = start + timedelta(days=day)
        app.run_due(now)
        app.place_order({"id": f"b{day}", "member": "bob", "lines": [{**BURRITO, "qty": 3}]}, now)
        app.run_due(now)
    app.redeem({"member": "bob", "reward": "five-off", "as": "bob-five"}, now)
    app.issue_gift_card("g1", {"amount": "25.00"}, now)
    app.redeem_gift_card("g1", {"amount": "8.75"}, now)

    table = Table(title=f"Members at {now.isoformat()}")
    for column in ("member", "tier", "posted", "pending", "available", "visits", "rewards"):
        table.add_column(column)
    for member in ("alice", "bob"):
        view = app.member(member, now)
        table.add_row(
            member,
            view.tier,
            str(view.posted),
            str(view.pending),
            str(view.available),
            str(view.visits),
            ", ".join(view.rewards["available"]) or "-",
        )
    console.print(table)
    console.print(f"Gift card g1 balance: {format_money(app.gift_card('g1').balance)}")
    console.print("\n[bold]Why alice's order o1 earned what it did[/]")
    for sentence in app.order_explanation("o1"):
        console.print(f"  - {sentence}")
