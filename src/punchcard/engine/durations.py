"""Durations of program files: ISO-8601 days/hours/minutes/seconds, or one short form."""

from __future__ import annotations

import re
from datetime import timedelta

_ISO_RE = re.compile(
    r"P(?!\Z)(?:(?P<d>[0-9]+)D)?(?:T(?!\Z)(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+)S)?)?"
)
_SHORT_RE = re.compile(r"(?P<n>[0-9]+)(?P<unit>[smhd])")
_SHORT_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """Parse `PT15M`, `P1DT12H` or `90s`/`15m`/`24h`/`30d`; a day is 24 hours."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration like PT15M or 15m")
    match = _ISO_RE.fullmatch(text)
    if match:
        parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        return timedelta(
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    match = _SHORT_RE.fullmatch(text)
    if match:
        return timedelta(**{_SHORT_UNITS[match["unit"]]: int(match["n"])})
    raise ValueError(f"{text!r} is not a duration like PT15M, P1DT12H, 90s, 15m, 24h or 30d")
