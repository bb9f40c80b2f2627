"""/v1/inbound: ordering platforms push order events here, signed with a shared secret."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from punchcard.api import responses
from punchcard.api.context import Call, write
from punchcard.api.guard import GuardedRoute, keyless, needs
from punchcard.api.problems import ApiProblem
from punchcard.api.routes import read
from punchcard.api.schemas import SourceBody
from punchcard.services import inbound

SIGNATURE_HEADERS = [
    {
        "name": "X-Punchcard-Timestamp",
        "in": "header",
        "required": True,
        "description": "Unix seconds when the source signed; refused beyond 5 minutes off",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "X-Punchcard-Signature",
        "in": "header",
        "required": True,
        "description": "sha256= and the hex HMAC-SHA256 of {timestamp}.{raw body}",
        "schema": {"type": "string"},
    },
]

router = APIRouter(prefix="/v1/inbound", route_class=GuardedRoute, tags=["inbound"])


@router.post(
    "/sources",
    operation_id="createInboundSource",
    status_code=201,
    response_model=responses.written(responses.InboundSource),
)
def create_source(body: SourceBody, c: Call = needs("inbound:write")) -> Response:
    """A source and its signing secret (in this answer only); events go to its `url`."""
    return write(
        c,
        lambda uow, now: inbound.create_source(uow.conn, c.env_id, body.mapping, now),
        lambda made, _uow, _now: made,
        status=201,
    )


@router.get(
    "/sources/{source_id}/events",
    operation_id="listInboundEvents",
    response_model=responses.InboundEvents,
)
async def list_events(source_id: str, c: Call = needs("inbound:write")) -> Response:
    """What became of each event: pending (waiting for its order), done, or failed and why."""
    return await read(
        c,
        lambda uow, _now, _ok: {"events": inbound.events(uow.conn, c.env_id, source_id)},
    )


@router.post(
    "/{source_id}",
    operation_id="receiveInboundEvent",
    status_code=202,
    response_model=responses.Received,
    responses={
        200: {
            "description": "A duplicate of an event already received; stored once",
            "model": responses.Received,
        }
    },
    openapi_extra={"parameters": SIGNATURE_HEADERS},
)
@keyless  # signed by the source instead
async def receive(source_id: str, request: Request) -> Response:
    """Verify the signature on the raw bytes, store the event once, answer at once.

    Needs no API key and no Idempotency-Key: the signature authenticates, the event id dedupes.
    """
    body = await request.body()
    state = request.app.state
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        new = await run_in_threadpool(
            inbound.receive, state.engine, source_id, body, headers, state.clock.now()
        )
    except inbound.BadSignature as exc:
        # An unknown source is answered like a known one with a wrong signature: no id is confirmed.
        detail = "signature does not match" if str(exc) == "unknown source" else str(exc)
        raise ApiProblem(401, "bad_signature", detail) from exc
    return JSONResponse({"received": True, "duplicate": not new}, status_code=202 if new else 200)
