"""What a source mapping does: read an event's id, and turn it into one order operation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

Kind = Literal["place", "close", "edit", "refund", "void"]


@dataclass(frozen=True)
class Operation:
    kind: Kind
    data: dict[str, Any]  # the service layer's input for that use case


class Mapping(Protocol):
    """A source format. `event_id` must be stable across the source's retries."""

    def event_id(self, event: Any) -> str: ...

    def operation(self, event: Any) -> Operation: ...
