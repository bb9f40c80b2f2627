"""The synthetic chain: reproducible, exactly sized, internally consistent, and shaped like a restaurant's day."""

from __future__ import annotations

import time
import tracemalloc
from collections import Counter
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import pytest
from pydantic import BaseModel

from punchcard.api.schemas import (
    CaptureBody,
    EnrollBody,
    GiftCardBody,
    HoldBody,
    OrderBody,
    ProgramBody,
    RefundBody,
)
from punchcard.engine.evaluate import Standing, allocate, evaluate
from punchcard.engine.money import parse_money
from punchcard.engine.orders import Order, parse_order_parts
from punchcard.engine.programs import parse_program
from punchcard.synthetic import Operation, operations
from punchcard.synthetic.operations import DEMO_PROGRAM


@cache
def generated(seed: int, orders: int) -> tuple[Operation, ...]:
    return tuple(operations(seed=seed, orders=orders))


def body(op: Operation) -> dict[str, Any]:
    assert op.body is not None
    return op.body


def text(ops: Any) -> str:
    return "".join(op.to_json() + "\n" for op in ops)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes() -> None:
    first = text(generated(5, 2000))
    assert text(operations(seed=5, orders=2000)) == first
    assert text(operations(seed=6, orders=2000)) != first


def test_a_seed_and_size_pin_every_count() -> None:
    kinds = Counter(op.kind for op in generated(7, 2000))
    assert kinds == {
        "publish_program": 1,
        "enroll": 390,
        "place_order": 2000,
        "close_order": 66,
        "refund": 41,
        "void": 14,
        "issue_gift_card": 46,
        "authorize_gift_card": 35,
        "capture_gift_card": 35,
    }


@pytest.mark.parametrize("count", [0, 1, 7, 999])
def test_exactly_the_asked_number_of_orders_with_ids_in_time_order(count: int) -> None:
    ids = [body(op)["id"] for op in operations(seed=1, orders=count) if op.kind == "place_order"]
    assert ids == [f"o{n:08d}" for n in range(1, count + 1)]


def test_operations_are_in_time_order_with_unique_keys_and_bodies_the_api_accepts() -> None:
    schemas: dict[str, type[BaseModel] | None] = {
        "publish_program": ProgramBody,
        "enroll": EnrollBody,
        "place_order": OrderBody,
        "issue_gift_card": GiftCardBody,
        "authorize_gift_card": HoldBody,
        "capture_gift_card": CaptureBody,
        "refund": RefundBody,
        "close_order": None,
        "void": None,
    }
    ops = generated(7, 2000)
    assert [op.at for op in ops] == sorted(op.at for op in ops)
    assert len({op.idempotency_key for op in ops}) == len(ops)
    for op in ops:
        schema = schemas[op.kind]
        assert op.method == "POST" and op.path.startswith("/v1/")
        assert op.at.utcoffset() == timedelta(0)
        if schema is None:
            assert op.body is None
            continue
        schema.model_validate(op.body, strict=False)
        if op.kind == "place_order":
            assert op.body is not None
            placed = datetime.fromisoformat(op.body["at"])
            assert placed == op.at and placed.utcoffset() != op.at.utcoffset()  # local time


def test_follow_ups_come_after_their_own_order_and_refunds_stay_within_quantities() -> None:
    placed: dict[str, dict[str, int]] = {}  # order -> line -> quantity not yet refunded
    open_orders: set[str] = set()
    voided: set[str] = set()
    refunded: Counter[str] = Counter()
    for op in generated(7, 5000):
        if op.kind == "place_order":
            assert op.body is not None
            placed[op.body["id"]] = {line["id"]: line["qty"] for line in op.body["lines"]}
            if op.body["status"] == "open":
                open_orders.add(op.body["id"])
            continue
        if op.kind not in ("close_order", "void", "refund"):
            continue
        order = op.path.split("/")[3]
        assert order in placed, f"{op.kind} of {order} before it was placed"
        assert order not in voided
        if op.kind == "close_order":
            assert order in open_orders
            open_orders.remove(order)
            continue
        assert order not in open_orders, f"{op.kind} of {order} while it is open"
        left = placed[order]
        if op.kind == "void":
            assert order not in refunded  # a refunded order is never then voided
            voided.add(order)
            continue
        refunded[order] += 1
        if op.body == {"all": True}:
            assert any(left.values())
            placed[order] = dict.fromkeys(left, 0)
        else:
            assert op.body is not None
            for item in op.body["lines"]:
                assert 1 <= item["qty"] <= left[item["line"]]
                left[item["line"]] -= item["qty"]
    assert open_orders == set()  # every tab is closed
    assert len(voided) == 40
    assert Counter(refunded.values()) == {1: 108, 2: 6}  # 2.5% of orders; some refunded twice


def test_tenders_add_up_to_lines_less_discounts_plus_tax_tip_and_fees() -> None:
    program = parse_program(DEMO_PROGRAM.read_text())
    split = only_card = 0
    for op in generated(7, 5000):
        if op.kind != "place_order":
            continue
        assert op.body is not None
        parts = parse_order_parts(op.body)
        order = Order(id=op.body["id"], at=op.at, **parts)
        gross = sum(line.qty * line.unit_amount for line in order.lines)
        discounts = sum(d.amount for d in order.discounts)
        # The engine takes every discount in full: none is more than its line or the order.
        assert sum(allocate(program, order).line_discounts.values()) == discounts
        total = gross - discounts + order.tax + order.tip + order.fees
        assert sum(t.amount for t in order.tenders) == total, op.body["id"]
        types = [t.type for t in order.tenders]
        split += types == ["gift_card", "card"]
        only_card += types == ["gift_card"]
    assert (split, only_card) == (53, 71)


def test_gift_cards_are_issued_before_use_and_never_spend_more_than_their_balance() -> None:
    balances: dict[str, int] = {}
    held: dict[str, tuple[str, int]] = {}  # hold -> card, amount
    captured: dict[str, int] = {}
    issued = spent = 0
    for op in generated(7, 5000):
        body = op.body or {}
        if op.kind == "issue_gift_card":
            assert body["id"] not in balances
            balances[body["id"]] = parse_money(body["amount"])
            issued += balances[body["id"]]
        elif op.kind == "authorize_gift_card":
            card = op.path.split("/")[3]
            amount = parse_money(body["amount"])
            assert 0 < amount <= balances[card]
            balances[card] -= amount
            held[body["id"]] = (card, amount)
        elif op.kind == "capture_gift_card":
            hold = op.path.split("/")[4]
            assert hold in held and hold not in captured
            captured[hold] = held[hold][1]
            spent += held[hold][1]
        elif op.kind == "place_order":
            for tender in body["tenders"]:
                if tender["type"] == "gift_card":
                    hold = f"h-{body['id']}"
                    assert held[hold] == (tender["gift_card"], parse_money(tender["amount"]))
                    assert hold in captured
    assert min(balances.values()) >= 0
    assert spent == sum(captured.values()) <= issued
    assert sum(balances.values()) == issued - spent
    assert len(captured) == 124


def _peak(t: datetime) -> bool:
    return 11 <= t.hour < 14 or 17 <= t.hour < 20


def test_orders_peak_at_lunch_and_dinner_in_each_stores_local_time() -> None:
    # Expected share in 11-14 and 17-20 local: 0.45 x 0.95 (lunch) + 0.35 x 0.85 (dinner)
    # + 0.20 x 6/11.5 (even) = 0.83; orders spread evenly over the open hours would give
    # 0.52. With 5,000 orders one standard error is 0.005: 0.80 is six below.
    orders = [op for op in generated(7, 5000) if op.kind == "place_order"]
    local = [datetime.fromisoformat(body(op)["at"]) for op in orders]
    assert sum(map(_peak, local)) / len(local) > 0.80
    by_offset: dict[object, list[bool]] = {}
    for t in local:
        by_offset.setdefault(t.utcoffset(), []).append(_peak(t))
    assert len(by_offset) >= 4  # New York, Chicago, Denver and Los Angeles, and daylight saving
    for offset, flags in by_offset.items():
        if len(flags) > 500:
            assert sum(flags) / len(flags) > 0.78, offset
    # The same moments on a UTC clock are not peaked: the local time is what is modelled.
    assert sum(_peak(op.at) for op in orders) / len(orders) < 0.45


def test_most_members_visit_rarely_and_a_few_weekly() -> None:
    visits = Counter(body(op)["member"] for op in generated(7, 5000) if op.kind == "place_order")
    counts = sorted(visits.values(), reverse=True)
    # Log-normal weekly rates (median 0.2, sigma 1): the top tenth of members has
    # 1 - Phi(1.28 - 1) = 39% of the visits in expectation; even rates would give ~15%.
    assert sum(counts[: len(counts) // 10]) / sum(counts) > 0.30
    assert counts[len(counts) // 2] <= 3  # the median member: a few visits a quarter
    assert sum(c >= 13 for c in counts) > 0.03 * len(counts)  # weekly or more over 13 weeks


def test_the_demo_programs_item_bonus_and_exclusion_fire() -> None:
    program = parse_program(DEMO_PROGRAM.read_text())
    rules: Counter[str] = Counter()
    excluded_spend = 0
    for op in generated(7, 2000):
        if op.kind != "place_order":
            continue
        assert op.body is not None
        order = Order(id=op.body["id"], at=op.at, **parse_order_parts(op.body))
        outcome = evaluate(program, order, allocate(program, order), Standing(tier="gold"))
        rules.update(a.rule.split(":")[0] for a in outcome.awards if a.points)
        excluded_spend += any(line.category == "alcohol" for line in order.lines)
    assert rules["item_bonus"] > 300 and rules["tier"] > 1500 and rules["promotion"] > 0
    assert excluded_spend > 100


def test_a_million_orders_stream_from_the_first_day() -> None:
    started = time.perf_counter()
    ops = operations(seed=7, orders=1_000_000)
    first = next(op for op in ops if op.kind == "place_order")
    assert first.body is not None and first.body["id"] == "o00000001"
    assert time.perf_counter() - started < 10  # making the whole set takes about a minute


def _peak_bytes(orders: int, days: int) -> int:
    tracemalloc.start()
    try:
        for _ in operations(seed=7, orders=orders, days=days, members=300):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_with_a_day_of_orders_not_with_the_data_set() -> None:
    # Three times the days at the same orders a day: a set held whole would need three times
    # the memory; a stream needs what one day needs.
    assert _peak_bytes(3000, 6) < 1.25 * _peak_bytes(1000, 2)
