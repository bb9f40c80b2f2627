"""A factory of units of work bound to one database and one environment."""

from __future__ import annotations

from collections.abc import Callable

from punchcard.store.uow import UnitOfWork

UowFactory = Callable[[], UnitOfWork]
