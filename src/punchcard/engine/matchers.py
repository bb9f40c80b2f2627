"""Compiled matchers: which of many sku/category matches a line meets, in two lookups.

A program's item rules are checked for every line and modifier of every order. Scanning
each rule is rules x lines membership tests; an index from sku and from category to the
rules that name them makes it two dictionary lookups per line, however many rules there are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

NOTHING: frozenset[int] = frozenset()


class Named(Protocol):
    @property
    def skus(self) -> frozenset[str]: ...

    @property
    def categories(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class MatchIndex:
    """Positions of the matches naming each sku and each category."""

    by_sku: Mapping[str, frozenset[int]]
    by_category: Mapping[str, frozenset[int]]

    def hits(self, sku: str, category: str) -> frozenset[int]:
        """Positions of the matches that `sku` or `category` meets, each once."""
        named = self.by_sku.get(sku, NOTHING)
        grouped = self.by_category.get(category, NOTHING)
        if not grouped:
            return named
        return named | grouped if named else grouped


def index_matches(matches: Sequence[Named]) -> MatchIndex:
    by_sku: dict[str, set[int]] = {}
    by_category: dict[str, set[int]] = {}
    for position, match in enumerate(matches):
        for sku in match.skus:
            by_sku.setdefault(sku, set()).add(position)
        for category in match.categories:
            by_category.setdefault(category, set()).add(position)
    return MatchIndex(
        {k: frozenset(v) for k, v in by_sku.items()},
        {k: frozenset(v) for k, v in by_category.items()},
    )
