"""The FastAPI application: routes, problem responses, and the state they share."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from punchcard import __version__
from punchcard.api.inbound_routes import router as inbound_router
from punchcard.api.problems import ApiProblem, from_domain, problem
from punchcard.api.routes import InquiryLimiter, health_router, router
from punchcard.api.webhook_routes import router as webhook_router
from punchcard.errors import PunchcardError
from punchcard.services.clock import Clock

log = logging.getLogger("punchcard.api")


def create_app(
    engine: sa.Engine,
    clock: Clock,
    *,
    inquiries_per_minute: int = 30,
    webhook_allow_private: bool = False,
) -> FastAPI:
    app = FastAPI(
        title="Punchcard",
        version=__version__,
        summary="Loyalty and gift cards: idempotent, explicitly eventually consistent, multi-tenant.",
    )
    app.state.engine = engine
    app.state.clock = clock
    app.state.inquiries = InquiryLimiter(inquiries_per_minute)
    app.state.webhook_allow_private = webhook_allow_private
    app.include_router(router)
    app.include_router(webhook_router)
    app.include_router(inbound_router)
    app.include_router(health_router(lambda: app.state.engine))

    @app.exception_handler(PunchcardError)
    async def _domain(_request: Request, error: PunchcardError) -> Response:
        status, body = from_domain(error)
        return Response(body, status_code=status, media_type="application/problem+json")

    @app.exception_handler(ApiProblem)
    async def _api(_request: Request, error: ApiProblem) -> Response:
        return problem(error.status, error.code, error.detail, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return problem(error.status_code, code, str(error.detail), dict(error.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> Response:
        errors = [
            {"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in error.errors()
        ]
        first = errors[0] if errors else {"path": "body", "message": "invalid"}
        return problem(422, "invalid_input", f"{first['path']}: {first['message']}", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal", "something went wrong on our side; it has been logged")

    return app
