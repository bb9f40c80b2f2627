"""The in-process target: the real service layer and store, with the scenario's clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from punchcard.errors import InvalidInput
from punchcard.scenarios.files import ScenarioFileError, resolve_program
from punchcard.services.loyalty import Loyalty
from punchcard.services.programs import create_environment

GIFT_CARD_VERBS = ("issue", "reload", "redeem", "authorize", "capture", "void")


class InProcess:
    """Runs each scenario in a fresh environment of one database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.loyalty: Loyalty | None = None

    @property
    def app(self) -> Loyalty:
        assert self.loyalty is not None
        return self.loyalty

    def start(self, program: str, at: datetime) -> None:
        env_id = create_environment(self.engine, "scenario", at, clock=at)
        self.loyalty = Loyalty(self.engine, env_id)
        self.loyalty.publish(program, at)

    def finish(self) -> None:
        self.loyalty = None

    def run_due(self, now: datetime) -> None:
        self.app.run_due(now)

    def step(self, verb: str, args: Mapping[str, Any], now: datetime, base: Any) -> None:
        app = self.app
        if verb == "enroll":
            app.enroll(args, now)
        elif verb == "order":
            app.place_order(args, now)
        elif verb == "close":
            app.close_order(args, now)
        elif verb == "edit":
            app.edit_order(args, now)
        elif verb == "refund":
            app.refund_order(args, now)
        elif verb == "void":
            app.void_order(args, now)
        elif verb == "redeem":
            app.redeem(args, now)
        elif verb == "publish":
            try:
                source = resolve_program(args.get("program"), Path(base))
            except ScenarioFileError as exc:
                raise InvalidInput(str(exc)) from exc
            app.publish(source, now)
        elif verb == "gift_card":
            self._gift_card(args, now)

    def _gift_card(self, args: Mapping[str, Any], now: datetime) -> None:
        ops = [op for op in GIFT_CARD_VERBS if op in args]
        if len(ops) != 1:
            raise InvalidInput(f"gift_card: give one of {', '.join(GIFT_CARD_VERBS)}")
        op, app = ops[0], self.app
        subject = args[op]
        if op == "issue":
            app.issue_gift_card(subject, args, now)
        elif op == "reload":
            app.reload_gift_card(subject, args, now)
        elif op == "redeem":
            app.redeem_gift_card(subject, args, now)
        elif op == "authorize":
            app.authorize_gift_card(subject, args, now)
        elif op == "capture":
            app.capture_hold(subject, args, now)
        else:
            app.void_hold(subject, now)

    def member(self, alias: str, now: datetime) -> dict[str, Any]:
        view = self.app.member(alias, now)
        return {
            "points": {"posted": view.posted, "pending": view.pending, "available": view.available},
            "tier": view.tier,
            "visits": view.visits,
            "punch_cards": view.punch_cards,
            "rewards": view.rewards,
        }

    def gift_card(self, alias: str) -> dict[str, Any]:
        view = self.app.gift_card(alias)
        return {"balance": view.balance, "last": {"approved": view.last_approved}}
