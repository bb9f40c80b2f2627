"""`Retry-After` read as RFC 9110 writes it, by the webhook sender and the API client alike.

A header is the other side's to write: anything but ASCII delay-seconds or an HTTP-date
is ignored, never raised (`"²".isdigit()` is true and `float("²")` fails).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_DIGITS = frozenset("0123456789")


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds to wait that `value` asks for, at least 0 (a date in the past is now); None
    when it is absent or not a Retry-After. Huge delay-seconds are `inf`: callers cap."""
    text = (value or "").strip(" \t")
    if not text:
        return None
    if _DIGITS.issuperset(text):
        return float(text)  # float(), unlike int(), takes any number of digits
    try:
        at = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if at.tzinfo is None:  # an asctime date or a -0000 zone: HTTP dates are all GMT
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - now).total_seconds())
