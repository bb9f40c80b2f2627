"""The service façade: one environment's use cases, each in its own unit of work.

The scenario runner, the CLI and (later) the API all call these methods; `now` is
always passed in, because nothing in Punchcard reads the wall clock by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from punchcard.ledger import store as ledger
from punchcard.services import due, gift_cards, members, orders, programs, rewards
from punchcard.store.uow import UnitOfWork

T = TypeVar("T")


class Loyalty:
    """Use cases of one environment (a tenant's sandbox or live, or a scenario run)."""

    def __init__(self, engine: sa.Engine, env_id: str) -> None:
        self.engine = engine
        self.env_id = env_id

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, self.env_id)

    def _write(self, use_case: Callable[[UnitOfWork], T]) -> T:
        with self.uow() as uow:
            result = use_case(uow)
            uow.commit()
            return result

    def _read(self, query: Callable[[UnitOfWork], T]) -> T:
        with UnitOfWork(self.engine, self.env_id, read_only=True) as uow:
            return query(uow)

    def publish(self, source: str, now: datetime) -> int:
        return self._write(lambda uow: programs.publish(uow, source, now, live_from=now))

    def enroll(self, data: Mapping[str, Any], now: datetime) -> int:
        return self._write(lambda uow: members.enroll(uow, data, now))

    def place_order(self, data: Mapping[str, Any], now: datetime) -> None:
        self._write(lambda uow: orders.place(uow, data, now))

    def close_order(self, data: Mapping[str, Any], now: datetime) -> None:
        self._write(lambda uow: orders.close(uow, data, now))

    def edit_order(self, data: Mapping[str, Any], now: datetime) -> None:
        self._write(lambda uow: orders.edit(uow, data, now))

    def refund_order(self, data: Mapping[str, Any], now: datetime) -> None:
        self._write(lambda uow: orders.refund(uow, data, now))

    def void_order(self, data: Mapping[str, Any], now: datetime) -> None:
        self._write(lambda uow: orders.void(uow, data, now))

    def redeem(self, data: Mapping[str, Any], now: datetime) -> int:
        return self._write(lambda uow: rewards.redeem(uow, data, now))

    def transfer_points(self, data: Mapping[str, Any], now: datetime) -> members.PointsTransfer:
        return self._write(lambda uow: members.transfer_points(uow, data, now))

    def issue_gift_card(self, alias: Any, data: Mapping[str, Any], now: datetime) -> None:
        self._write(lambda uow: gift_cards.issue(uow, alias, data, now))

    def reload_gift_card(self, alias: Any, data: Mapping[str, Any], now: datetime) -> None:
        self._write(lambda uow: gift_cards.reload(uow, alias, data, now))

    def redeem_gift_card(self, alias: Any, data: Mapping[str, Any], now: datetime) -> int:
        return self._write(lambda uow: gift_cards.redeem(uow, alias, data, now))

    def transfer_gift_card(
        self, alias: Any, data: Mapping[str, Any], now: datetime
    ) -> gift_cards.Transfer:
        return self._write(lambda uow: gift_cards.transfer_value(uow, alias, data, now))

    def authorize_gift_card(self, alias: Any, data: Mapping[str, Any], now: datetime) -> int:
        return self._write(lambda uow: gift_cards.authorize(uow, alias, data, now))

    def capture_hold(self, hold: Any, data: Mapping[str, Any], now: datetime) -> int:
        return self._write(lambda uow: gift_cards.capture(uow, hold, data, now))

    def void_hold(self, hold: Any, now: datetime) -> None:
        self._write(lambda uow: gift_cards.void(uow, hold, now))

    def run_due(self, now: datetime) -> int:
        return due.run_due(self.uow, now)

    def member(self, external_id: str, now: datetime) -> members.MemberView:
        return self._read(lambda uow: members.view(uow, external_id, now))

    def balances(
        self, member_ids: list[str], card_ids: list[str], now: datetime
    ) -> tuple[list[members.MemberView], list[gift_cards.GiftCardView]]:
        """Members' and cards' balances in one snapshot."""

        def both(
            uow: UnitOfWork,
        ) -> tuple[list[members.MemberView], list[gift_cards.GiftCardView]]:
            ledger.snapshot(uow.conn)
            people = members.balances(uow, member_ids, now) if member_ids else []
            return people, gift_cards.views(uow, card_ids) if card_ids else []

        return self._read(both)

    def gift_card(self, alias: str) -> gift_cards.GiftCardView:
        return self._read(lambda uow: gift_cards.view(uow, alias))

    def order_explanation(self, external_id: str) -> list[str]:
        return self._read(lambda uow: orders.explanation(uow, external_id))
