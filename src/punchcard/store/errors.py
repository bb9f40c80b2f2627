"""Database errors as domain errors, in one place, by what the database refused."""

from __future__ import annotations

import sqlalchemy as sa

from punchcard.errors import InvalidState


def translate(error: sa.exc.IntegrityError) -> InvalidState | None:
    """A unique constraint (uq_*) refused a row: a concurrent request made the same thing first."""
    text = str(error.orig)
    if "uq_" in text or "UNIQUE constraint failed" in text or "unique constraint" in text:
        return InvalidState("it exists already: a request with the same id was faster")
    return None
