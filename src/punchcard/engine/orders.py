"""Orders as the engine sees them (docs/programs.md, "Orders"): plain frozen values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from punchcard import names
from punchcard.engine.money import MoneyFormatError, format_money, parse_money

# One amount, and the sums of an order (its total, its discounts, its tenders), in cents:
# 10,000,000,000.00. Bounding the sums too keeps every figure an order leads to (spend,
# discounts, points) far inside the database's 64-bit integers.
MAX_AMOUNT = 10**12


class OrderFormatError(ValueError):
    """Order data that does not have the order shape; `path` says where."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True, slots=True)
class Modifier:
    sku: str
    category: str
    qty: int  # per unit of the parent line
    unit_price: int  # cents


@dataclass(frozen=True, slots=True)
class Line:
    id: str
    sku: str
    category: str
    qty: int
    unit_price: int  # cents
    modifiers: tuple[Modifier, ...] = ()
    gift_card: bool = False  # the sale of a gift card: never earns

    @property
    def unit_amount(self) -> int:
        """One unit with its modifiers, in cents."""
        return self.unit_price + sum(m.qty * m.unit_price for m in self.modifiers)


@dataclass(frozen=True, slots=True)
class Discount:
    amount: int  # cents
    line: str | None = None  # None: an order discount


@dataclass(frozen=True, slots=True)
class Tender:
    type: str
    amount: int
    gift_card: str | None = None


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    at: datetime
    lines: tuple[Line, ...]
    discounts: tuple[Discount, ...] = ()
    tax: int = 0
    tip: int = 0
    fees: int = 0
    tenders: tuple[Tender, ...] = ()
    line_index: Mapping[str, Line] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "line_index", {line.id: line for line in self.lines})

    def with_parts(self, **parts: Any) -> Order:
        return replace(self, **parts)


ORDER_PARTS = ("lines", "discounts", "tax", "tip", "fees", "tenders")


def parse_order_parts(data: Mapping[str, Any], where: str = "order") -> dict[str, Any]:
    """Parse the editable parts of an order that `data` names (lines, discounts, ...)."""
    parts: dict[str, Any] = {}
    if "lines" in data:
        lines = _list(data["lines"], f"{where}.lines")
        if not lines:
            raise OrderFormatError(f"{where}.lines", "an order has at least one line")
        parsed = tuple(_line(item, f"{where}.lines[{i}]") for i, item in enumerate(lines))
        ids = [line.id for line in parsed]
        if len(set(ids)) != len(ids):
            raise OrderFormatError(f"{where}.lines", "line ids must be unique within an order")
        parts["lines"] = parsed
    if "discounts" in data:
        items = _list(data["discounts"], f"{where}.discounts")
        parts["discounts"] = tuple(
            _discount(item, f"{where}.discounts[{i}]") for i, item in enumerate(items)
        )
    for key in ("tax", "tip", "fees"):
        if key in data:
            parts[key] = _money(data[key], f"{where}.{key}")
    if "tenders" in data:
        items = _list(data["tenders"], f"{where}.tenders")
        parts["tenders"] = tuple(
            _tender(item, f"{where}.tenders[{i}]") for i, item in enumerate(items)
        )
    return parts


def check_order(order: Order, where: str = "order") -> None:
    """A line discount must name a line of the order, and the order's sums must stay within
    MAX_AMOUNT. The whole order is checked here, as placing, quoting and editing all call it:
    each amount alone is bounded, but qty x price x modifiers is not."""
    for i, discount in enumerate(order.discounts):
        if discount.line is not None and discount.line not in order.line_index:
            raise OrderFormatError(f"{where}.discounts[{i}].line", f"no line {discount.line!r}")
    bound = format_money(MAX_AMOUNT)
    total = 0
    lines = sum(line.qty * line.unit_amount for line in order.lines)
    for key, amount in (
        ("lines", lines),
        ("tax", order.tax),
        ("tip", order.tip),
        ("fees", order.fees),
    ):
        total += amount
        if total > MAX_AMOUNT:  # named by the part that takes it over
            raise OrderFormatError(f"{where}.{key}", f"the order's total is more than {bound}")
    for key, items in (("discounts", order.discounts), ("tenders", order.tenders)):
        if sum(item.amount for item in items) > MAX_AMOUNT:
            raise OrderFormatError(f"{where}.{key}", f"together more than {bound}")


def _line(data: Any, where: str) -> Line:
    data = _mapping(
        data, where, {"id", "sku", "category", "qty", "unit_price", "modifiers", "kind"}
    )
    kind = data.get("kind", "item")
    if kind not in ("item", "gift_card"):
        raise OrderFormatError(f"{where}.kind", "is item or gift_card")
    mods = _list(data.get("modifiers", []), f"{where}.modifiers")
    return Line(
        id=_text(data, "id", where),
        sku=_text(data, "sku", where),
        category=_text(data, "category", where),
        qty=_quantity(data.get("qty"), f"{where}.qty"),
        unit_price=_money(_required(data, "unit_price", where), f"{where}.unit_price"),
        modifiers=tuple(_modifier(m, f"{where}.modifiers[{i}]") for i, m in enumerate(mods)),
        gift_card=kind == "gift_card",
    )


def _modifier(data: Any, where: str) -> Modifier:
    data = _mapping(data, where, {"sku", "category", "qty", "unit_price"})
    return Modifier(
        sku=_text(data, "sku", where),
        category=_text(data, "category", where),
        qty=_quantity(data.get("qty", 1), f"{where}.qty"),
        unit_price=_money(_required(data, "unit_price", where), f"{where}.unit_price"),
    )


def _discount(data: Any, where: str) -> Discount:
    data = _mapping(data, where, {"amount", "line"})
    line = None if data.get("line") is None else _text(data, "line", where)  # ids as lines take
    return Discount(amount=_money(_required(data, "amount", where), f"{where}.amount"), line=line)


def _tender(data: Any, where: str) -> Tender:
    data = _mapping(data, where, {"type", "amount", "gift_card"})
    card = data.get("gift_card")
    return Tender(
        type=_text(data, "type", where),
        amount=_money(_required(data, "amount", where), f"{where}.amount"),
        gift_card=None if card is None else str(card),
    )


def _mapping(data: Any, where: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise OrderFormatError(where, "is a mapping")
    unknown = sorted(str(k) for k in data if k not in keys)
    if unknown:
        raise OrderFormatError(f"{where}.{unknown[0]}", "unknown key")
    return data


def _list(data: Any, where: str) -> Sequence[Any]:
    if not isinstance(data, list | tuple):
        raise OrderFormatError(where, "is a list")
    return data


def _required(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise OrderFormatError(f"{where}.{key}", "is required")
    return data[key]


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = _required(data, key, where)
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise OrderFormatError(f"{where}.{key}", "is a non-empty text")
    text = names.normal(str(value))
    wrong = names.problem(text)
    if wrong:
        raise OrderFormatError(f"{where}.{key}", wrong)
    return text


def _quantity(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OrderFormatError(where, f"{value!r} is not a positive whole quantity")
    if value > 1_000_000:
        raise OrderFormatError(where, f"{value} is more than 1000000")
    return value


def _money(value: Any, where: str) -> int:
    try:
        cents = parse_money(value)
    except MoneyFormatError as exc:
        raise OrderFormatError(where, str(exc)) from exc
    if cents < 0:
        raise OrderFormatError(where, "must not be negative")
    if cents > MAX_AMOUNT:
        raise OrderFormatError(where, "is too large")
    return cents
