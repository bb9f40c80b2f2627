"""Inbound order events from ordering platforms: one small mapping module per source format."""

from __future__ import annotations

from punchcard.inbound.generic import GenericJson
from punchcard.inbound.mapping import Mapping, Operation

MAPPINGS: dict[str, Mapping] = {"generic": GenericJson()}

__all__ = ["MAPPINGS", "Mapping", "Operation"]
