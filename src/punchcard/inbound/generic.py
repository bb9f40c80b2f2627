"""The built-in generic JSON mapping (see docs/webhooks.md, "Inbound order events").

{"id": "evt_1", "type": "order.placed", "order": {<the order shape>}}
{"id": "evt_2", "type": "order.closed", "order": {"id": "o1"}}
{"id": "evt_3", "type": "order.edited", "order": {"id": "o1", "lines": [...], ...}}
{"id": "evt_4", "type": "order.refunded", "order": {"id": "o1"}, "refund": {"lines": [...]} | {"all": true}}
{"id": "evt_5", "type": "order.voided", "order": {"id": "o1"}}
"""

from __future__ import annotations

from typing import Any

from punchcard import names
from punchcard.errors import InvalidInput
from punchcard.inbound.mapping import Operation

MAX_EVENT_ID = 200  # the stored id's width
TYPES = ("order.placed", "order.closed", "order.edited", "order.refunded", "order.voided")


class GenericJson:
    def event_id(self, event: Any) -> str:
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
            raise InvalidInput("an event is a JSON object with a text id")
        ident = str(event["id"])
        if len(ident) > MAX_EVENT_ID:
            raise InvalidInput(f"id: at most {MAX_EVENT_ID} characters")
        wrong = names.problem(ident)  # the rule of every id (the event comes in NFC)
        if wrong is not None:
            raise InvalidInput(f"id: {wrong}")
        return ident

    def operation(self, event: Any) -> Operation:
        kind = event.get("type")
        order = event.get("order")
        if kind not in TYPES:
            raise InvalidInput(f"type: one of {', '.join(TYPES)}")
        if not isinstance(order, dict) or "id" not in order:
            raise InvalidInput("order: an object with the order's id")
        if kind == "order.placed":
            # Placed means open unless the event says closed: its order.closed comes later.
            return Operation("place", {"status": "open", **order})
        ref = {"order": order["id"]}
        if kind == "order.closed":
            return Operation("close", ref)
        if kind == "order.voided":
            return Operation("void", ref)
        if kind == "order.edited":
            return Operation("edit", {**{k: v for k, v in order.items() if k != "id"}, **ref})
        refund = event.get("refund")
        if not isinstance(refund, dict):
            raise InvalidInput("refund: {lines: [...]} or {all: true}")
        return Operation("refund", {**refund, **ref})
