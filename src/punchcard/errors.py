"""Domain errors, each with a stable `code` that the scenario format and the API use.

PunchcardError
├── InvalidInput       invalid_input        malformed input, or a quantity/amount beyond what is there
├── NotFound           not_found            an id or alias that names nothing
├── InvalidState       invalid_state        a transition the lifecycle forbids, a reused id
├── RewardUnavailable  reward_unavailable   a reward expired, used, reserved, or not redeemable
├── InsufficientPoints insufficient_points  fewer posted points than the reward costs
├── InsufficientFunds  insufficient_funds   a gift card that cannot cover the amount
└── Forbidden          forbidden            the key may not do this (never in a scenario)

When several apply the first in this order wins: malformed input, not_found,
invalid_state, reward_unavailable, an amount beyond what is there, insufficient_*.
"""

from __future__ import annotations


class PunchcardError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PunchcardError):
    code = "invalid_input"


class NotFound(PunchcardError):
    code = "not_found"


class InvalidState(PunchcardError):
    code = "invalid_state"


class RewardUnavailable(PunchcardError):
    code = "reward_unavailable"


class InsufficientPoints(PunchcardError):
    code = "insufficient_points"


class InsufficientFunds(PunchcardError):
    code = "insufficient_funds"


class Forbidden(PunchcardError):
    """What the caller's key may not do whatever the input: an API answer only, so not in
    BY_CODE, which lists the codes a scenario may expect."""

    code = "forbidden"


BY_CODE: dict[str, type[PunchcardError]] = {
    cls.code: cls
    for cls in (
        InvalidInput,
        NotFound,
        InvalidState,
        RewardUnavailable,
        InsufficientPoints,
        InsufficientFunds,
    )
}
CODES = tuple(BY_CODE)
