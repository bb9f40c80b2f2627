"""The HTTP target: each scenario in a fresh sandbox of a running server.

The sandbox starts at the scenario's `start` with the scenario's program; the
runner's clock moves become moves of the sandbox's clock (doing the due work on the
way), and the sandbox is deleted afterwards. Same steps, same results as in process.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from punchcard.client import Client
from punchcard.engine.documents import plain
from punchcard.engine.money import parse_money
from punchcard.errors import InvalidInput
from punchcard.scenarios.files import ScenarioFileError, resolve_program
from punchcard.scenarios.in_process import GIFT_CARD_VERBS
from punchcard.services.inputs import as_name

ORDER_KEYS = ("lines", "discounts", "tax", "tip", "fees", "tenders", "rewards")


class OverHttp:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.tenant = Client(base_url, api_key)
        self.sandbox_id: str | None = None
        self.client: Client | None = None

    @property
    def api(self) -> Client:
        assert self.client is not None
        return self.client

    def start(
        self, program: str, at: datetime, *, upload: bool = True, hook_url: str | None = None
    ) -> None:
        """A fresh sandbox at `at` running the scenario's program (or, with upload=False, the
        program versions of the key's environment, to compare deployments as they are), with
        its webhooks sent to `hook_url` from the first event on."""
        made = self.tenant.create_sandbox("scenario", at.isoformat(), copy_programs=not upload)
        self.sandbox_id = made["id"]
        self.client = Client(self.base_url, made["key"])
        if hook_url is not None:
            self.api.request("POST", "/v1/webhooks/endpoints", {"url": hook_url})
        if upload:
            self.api.upload_program(program, live_from=at.isoformat())

    def finish(self) -> None:
        if self.sandbox_id is not None:
            self.tenant.delete_sandbox(self.sandbox_id)
        if self.client is not None:
            self.client.close()
        self.sandbox_id = self.client = None

    def run_due(self, now: datetime) -> None:
        self.api.move_clock(to=now.isoformat())

    def step(self, verb: str, args: Mapping[str, Any], now: datetime, base: Any) -> None:
        api = self.api
        args = plain(dict(args))  # YAML numbers arrive as Decimal; JSON wants their text
        if verb == "enroll":
            api.enroll(_text(args.get("member")))
        elif verb == "order":
            api.place_order({k: v for k, v in args.items() if v is not None})
        elif verb == "close":
            api.close_order(_text(args.get("order")))
        elif verb == "edit":
            api.edit_order(
                _text(args.get("order")), {k: args[k] for k in args if k not in ("order", "at")}
            )
        elif verb == "refund":
            lines = args.get("lines")
            api.refund(_text(args.get("order")), lines, all=bool(args.get("all")))
        elif verb == "void":
            api.void_order(_text(args.get("order")))
        elif verb == "redeem":
            api.redeem(_text(args.get("member")), _text(args.get("reward")), args.get("as"))
        elif verb == "publish":
            try:
                source = resolve_program(args.get("program"), Path(base))
            except ScenarioFileError as exc:
                raise InvalidInput(str(exc)) from exc
            api.upload_program(source, live_from=now.isoformat())
        elif verb == "gift_card":
            self._gift_card(args)

    def _gift_card(self, args: Mapping[str, Any]) -> None:
        ops = [op for op in GIFT_CARD_VERBS if op in args]
        if len(ops) != 1:
            raise InvalidInput(f"gift_card: give one of {', '.join(GIFT_CARD_VERBS)}")
        op, api = ops[0], self.api
        subject = _text(args[op])
        amount = args.get("amount")
        text = None if amount is None else str(amount)
        partial = bool(args.get("partial"))
        if op == "issue":
            api.issue_gift_card(_amount(text), subject)
        elif op == "reload":
            api.reload_gift_card(subject, _amount(text))
        elif op == "redeem":
            api.redeem_gift_card(subject, _amount(text), partial)
        elif op == "authorize":
            api.authorize(subject, _amount(text), partial=partial, hold=args.get("hold"))
        elif op == "capture":
            api.capture(subject, text)
        else:
            api.void_hold(subject)

    def member(self, alias: str, now: datetime) -> dict[str, Any]:
        seen = self.api.member(alias)
        points = seen["points"]
        return {
            "points": {
                "posted": points["posted"],
                "pending": points["pending"],
                "available": points["available"],
            },
            "tier": seen["tier"],
            "visits": seen["visits"],
            "punch_cards": seen["punch_cards"],
            "rewards": seen["rewards"],
        }

    def gift_card(self, alias: str) -> dict[str, Any]:
        seen = self.api.gift_card(alias)
        last = seen["last_approved"]
        return {
            "balance": parse_money(seen["balance"]["amount"]),
            "last": {"approved": None if last is None else parse_money(last["amount"])},
        }


def _text(value: Any) -> str:
    return as_name(value, "name")


def _amount(value: str | None) -> str:
    if value is None:
        raise InvalidInput("amount is required")
    return value
