"""RFC 7807 problem responses, each with a stable `code`.

Domain errors map to statuses here, in one place; a foreign exception that reaches
the app is a 500 `internal` problem (and is logged), never a stack trace.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from punchcard.errors import PunchcardError

# Every `code` a problem can carry: the status it is answered with (None: the status varies)
# and when. It is the Problem schema's `code` enum, so a client can switch on it, and gives a
# domain error its status. tests/e2e/test_openapi_document.py fails if a code answered
# anywhere (an ApiProblem, a problem response, a domain error class) is missing here.
PROBLEM_CODES: dict[str, tuple[int | None, str]] = {
    "invalid_input": (422, "malformed input, or a quantity or amount beyond what is there"),
    "not_found": (404, "an id or alias that names nothing, or a path that is no route"),
    "invalid_state": (409, "a transition the lifecycle forbids, or a reused id"),
    "reward_unavailable": (409, "a reward expired, used, reserved or not redeemable"),
    "insufficient_points": (409, "fewer posted points than the reward costs"),
    "insufficient_funds": (402, "a gift card that can not cover the amount"),
    "unauthenticated": (401, "no API key, or an unknown or revoked one"),
    "forbidden": (403, "the key may not do this (it lacks the operation's scope, say)"),
    "bad_signature": (401, "an inbound event's signature or timestamp is wrong"),
    "idempotency_key_missing": (400, "a POST, PUT or PATCH without an Idempotency-Key"),
    "idempotency_key_too_long": (400, "an Idempotency-Key over 255 characters"),
    "idempotency_key_given_twice": (400, "more than one Idempotency-Key header"),
    "idempotency_key_reused": (422, "the key was used with another method, path or body"),
    "idempotency_key_in_flight": (409, "a request with this key is still running: retry"),
    "sandbox_busy": (409, "another clock move holds the sandbox: retry"),
    "rate_limited": (429, "too many balance inquiries: wait Retry-After seconds"),
    "body_too_large": (413, "the request body is over 1 MiB"),
    "unsupported_media_type": (415, "the body is not sent as application/json"),
    "method_not_allowed": (405, "the path does not take this method"),
    "http_error": (None, "another refusal by the HTTP layer, with its own status"),
    "internal": (500, "something went wrong on our side; it has been logged"),
}
STATUS_OF_CODE = {code: status for code, (status, _) in PROBLEM_CODES.items() if status}


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 7807 problem. `code` is stable and names the rule the request broke; "
    "`errors` (on invalid_input from validation) names each field that is wrong.",
    "type": "object",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {
            "type": "string",
            "enum": list(PROBLEM_CODES),
            "description": "\n".join(
                f"- `{code}` ({status or 'varies'}): {when}"
                for code, (status, when) in PROBLEM_CODES.items()
            ),
        },
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "message"],
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

# Every /v1 operation may answer a problem: declared once, for the routers (and OpenAPI).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "A problem (application/problem+json) with a stable `code`",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
}


class ApiProblem(Exception):
    """A problem raised by the HTTP layer itself (auth, idempotency, rate limits)."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def problem_body(status: int, code: str, detail: str, **extra: Any) -> bytes:
    body = {
        "type": f"https://punchcard.dev/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def problem(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return Response(
        problem_body(status, code, detail, **extra),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def from_domain(error: PunchcardError) -> tuple[int, bytes]:
    status = STATUS_OF_CODE.get(error.code, 400)
    return status, problem_body(status, error.code, error.message)
