"""RFC 7807 problem responses, each with a stable `code`.

Domain errors map to statuses here, in one place; a foreign exception that reaches
the app is a 500 `internal` problem (and is logged), never a stack trace.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from punchcard.errors import PunchcardError

STATUS_OF_CODE = {
    "invalid_input": 422,
    "not_found": 404,
    "invalid_state": 409,
    "reward_unavailable": 409,
    "insufficient_points": 409,
    "insufficient_funds": 402,
}


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
        "code": {"type": "string"},
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
