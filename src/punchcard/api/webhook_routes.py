"""/v1/webhooks: endpoints, secret rotation, the attempt log, dead letters, resend, recover.

Endpoints live on the server's clock, in sandboxes too: their secrets' overlap, failing
time and schedule are about real sends, which receivers check against their own clocks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from punchcard.api import responses
from punchcard.api.context import Call, write
from punchcard.api.guard import GuardedRoute, needs
from punchcard.api.routes import _cursor, _next_cursor, read
from punchcard.api.schemas import EndpointBody, EndpointPatch, RecoverBody
from punchcard.services import webhooks
from punchcard.store.uow import UnitOfWork

router = APIRouter(prefix="/v1/webhooks", route_class=GuardedRoute, tags=["webhooks"])


def _allow_private(c: Call) -> bool:
    """Sandboxes may send to loopback and private addresses; live only when configured (tests)."""
    return bool(c.request.app.state.webhook_allow_private) or c.principal.env_kind != "live"


@router.post(
    "/endpoints",
    operation_id="createWebhookEndpoint",
    status_code=201,
    response_model=responses.written(responses.EndpointWithSecret),
)
def create_endpoint(body: EndpointBody, c: Call = needs("webhooks:write")) -> Response:
    """Subscribe a URL to event types (none: all). The signing secret is in this answer only."""
    return write(
        c,
        lambda uow, _now: webhooks.create_endpoint(
            uow.conn, c.env_id, body.model_dump(), c.clock.now(), allow_private=_allow_private(c)
        ),
        lambda made, _uow, _now: made,
        status=201,
    )


@router.get("/endpoints", operation_id="listWebhookEndpoints", response_model=responses.Endpoints)
async def list_endpoints(c: Call = needs("webhooks:read")) -> Response:
    return await read(
        c,
        lambda uow, _now, _ok: {
            "endpoints": webhooks.list_endpoints(uow.conn, c.env_id, c.clock.now())
        },
    )


@router.get(
    "/endpoints/{endpoint_id}", operation_id="getWebhookEndpoint", response_model=responses.Endpoint
)
async def get_endpoint(endpoint_id: str, c: Call = needs("webhooks:read")) -> Response:
    return await read(
        c,
        lambda uow, _now, _ok: webhooks.view(
            webhooks.endpoint_row(uow.conn, c.env_id, endpoint_id), c.clock.now()
        ),
    )


@router.patch(
    "/endpoints/{endpoint_id}",
    operation_id="updateWebhookEndpoint",
    response_model=responses.written(responses.Endpoint),
)
def update_endpoint(
    endpoint_id: str, body: EndpointPatch, c: Call = needs("webhooks:write")
) -> Response:
    return write(
        c,
        lambda uow, _now: webhooks.update_endpoint(
            uow.conn,
            c.env_id,
            endpoint_id,
            body.model_dump(),
            c.clock.now(),
            allow_private=_allow_private(c),
        ),
        lambda view, _uow, _now: view,
    )


@router.delete("/endpoints/{endpoint_id}", operation_id="deleteWebhookEndpoint", status_code=204)
def delete_endpoint(endpoint_id: str, c: Call = needs("webhooks:write")) -> Response:
    with c.engine.begin() as conn:
        webhooks.delete_endpoint(conn, c.env_id, endpoint_id, c.clock.now())
    return Response(status_code=204)


@router.post(
    "/endpoints/{endpoint_id}/rotate-secret",
    operation_id="rotateWebhookSecret",
    response_model=responses.written(responses.EndpointWithSecret),
)
def rotate_secret(endpoint_id: str, c: Call = needs("webhooks:write")) -> Response:
    """A new secret; the previous one keeps signing (beside it) for 24 hours."""
    return write(
        c,
        lambda uow, _now: webhooks.rotate_secret(uow.conn, c.env_id, endpoint_id, c.clock.now()),
        lambda made, _uow, _now: made,
    )


@router.get(
    "/endpoints/{endpoint_id}/attempts",
    operation_id="listWebhookAttempts",
    response_model=responses.Attempts,
)
async def list_attempts(
    endpoint_id: str,
    c: Call = needs("webhooks:read"),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> Response:
    def page(uow: UnitOfWork, _now: datetime, _ok: bool) -> dict[str, Any]:
        rows = webhooks.attempts(uow.conn, c.env_id, endpoint_id, _cursor(cursor), limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "attempts": [
                {
                    "message": r.message_id,
                    "at": r.at.isoformat(),
                    "status": r.status_code,
                    "latency_ms": r.latency_ms,
                    "response_excerpt": r.response_excerpt,
                    "error": r.error,
                }
                for r in rows
            ],
            "next_cursor": _next_cursor(rows[-1].id) if more else None,
        }

    return await read(c, page)


@router.get(
    "/endpoints/{endpoint_id}/dead-letters",
    operation_id="listDeadLetters",
    response_model=responses.DeadLetters,
)
async def list_dead_letters(endpoint_id: str, c: Call = needs("webhooks:read")) -> Response:
    return await read(
        c,
        lambda uow, _now, _ok: {"messages": webhooks.dead_letters(uow.conn, c.env_id, endpoint_id)},
    )


@router.post(
    "/endpoints/{endpoint_id}/recover",
    operation_id="recoverDeadLetters",
    response_model=responses.written(responses.Requeued),
)
def recover(endpoint_id: str, body: RecoverBody, c: Call = needs("webhooks:write")) -> Response:
    """Send again every dead-lettered message since a time."""
    return write(
        c,
        lambda uow, _now: webhooks.recover(
            uow.conn, c.env_id, endpoint_id, body.since, c.clock.now()
        ),
        lambda count, _uow, _now: {"requeued": count},
    )


@router.post(
    "/messages/{message_id}/resend",
    operation_id="resendWebhookMessage",
    response_model=responses.written(responses.Requeued),
)
def resend(message_id: str, c: Call = needs("webhooks:write")) -> Response:
    return write(
        c,
        lambda uow, _now: webhooks.resend(uow.conn, c.env_id, message_id, c.clock.now()),
        lambda count, _uow, _now: {"requeued": count},
    )
