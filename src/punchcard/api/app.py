"""The FastAPI application: routes, problem responses, and the state they share."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from punchcard import __version__
from punchcard.api.context import MAX_TOKEN, MAX_WAIT_MS
from punchcard.api.guard import declared
from punchcard.api.inbound_routes import router as inbound_router
from punchcard.api.problems import (
    PROBLEM_RESPONSES,
    PROBLEM_SCHEMA,
    ApiProblem,
    from_domain,
    problem,
)
from punchcard.api.routes import health_router, router
from punchcard.api.webhook_events import webhooks
from punchcard.api.webhook_routes import router as webhook_router
from punchcard.errors import PunchcardError
from punchcard.services import caches
from punchcard.services.clock import Clock
from punchcard.services.limits import InquiryLimiter
from punchcard.strict_json import is_json_media

log = logging.getLogger("punchcard.api")

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: a program document is a few KiB, an order far less

# What /docs loads, served from the package (static/swagger-ui/README.md): the docs work
# offline, and a reader's browser calls no CDN.
SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "One key per operation, reused on retry; kept 72 hours",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

# Every keyed GET takes a write's consistency token (docs/consistency.md); reads that are
# always current (the clock, a diagram) accept it and answer at once.
CONSISTENCY_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "consistency_token",
        "in": "query",
        "required": False,
        "description": "A write's consistency_token: answer once the read includes that write",
        "schema": {"type": "string", "maxLength": MAX_TOKEN},
    },
    {
        "name": "wait_ms",
        "in": "query",
        "required": False,
        "description": "How long to wait for the token's write before answering consistent: false",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "default": 0},
    },
    {
        "name": "Consistency-Token",
        "in": "header",
        "required": False,
        "description": "The same as the consistency_token query parameter",
        "schema": {"type": "string", "maxLength": MAX_TOKEN},
    },
]


class BodyLimit:
    """Refuses a request body over max_bytes (413 body_too_large) before any route reads it.

    The body is read here, bounded, and handed on whole: a route never sees more than the
    limit, whether the client declared a Content-Length or streamed chunks.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: there is no one to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, handed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is over the limit of {self.max_bytes} bytes"
        await problem(413, "body_too_large", detail)(scope, receive, send)


class NoNul:
    """Refuses a path or query that holds a NUL character (422 invalid_input), before any
    route looks it up: PostgreSQL's text can not hold one, so a member, card, endpoint or
    inbound source named so would fail the look-up itself (a 500), even before an inbound
    event's signature is checked."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for part, holds in (
                ("path", "\x00" in scope["path"]),
                ("query", b"%00" in scope["query_string"].lower()),
            ):
                if holds:
                    detail = f"the request's {part} holds a NUL character (%00)"
                    await problem(422, "invalid_input", detail)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus what it cannot see: the bearer key (with the scopes each
    operation needs) and Idempotency-Key that the guard and `write` read from the headers,
    the Problem body of every 4xx, and the webhook events the service sends."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    document["webhooks"], event_schemas = webhooks()
    for name, schema in event_schemas.items():
        # An event may reuse an answer's shape (Money, Award): the same schema, or a bug.
        if schemas.setdefault(name, schema) != schema:
            raise RuntimeError(f"two different schemas are named {name}")
    components["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: Authorization: Bearer pc_live_... or pc_sand_...",
        }
    }
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not (isinstance(route, APIRoute) and route.include_in_schema):
            continue
        guard = declared(route)
        if guard is None:
            continue
        for method in context.methods or ():
            operation = document["paths"][context.path_format][method.lower()]
            operation["security"] = guard.security()  # with the scopes it needs
            if method in {"POST", "PUT", "PATCH"}:
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY_PARAMETER)
            if method == "GET":
                operation.setdefault("parameters", []).extend(CONSISTENCY_PARAMETERS)
    app.openapi_schema = document
    return document


def _unparseable(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "the JSON is nested too deeply"
    if isinstance(cause, UnicodeError):
        return "the body is not UTF-8 text"
    return "the body is not JSON"


@asynccontextmanager
async def _caching(app: FastAPI) -> AsyncIterator[None]:
    """The process caches (keys, live versions) are on while the app serves: on PostgreSQL
    their listener runs from start-up to shutdown, and stopping it waits at most a moment."""
    engine = app.state.engine
    caches.start(engine)
    try:
        yield
    finally:
        caches.stop(engine)


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
        # `/v1/members/` is not a route: a 404 problem, not a bare 307 to a URL made from the
        # Host header before the key was checked.
        redirect_slashes=False,
        docs_url=None,  # served below, from the package's own Swagger UI
        redoc_url=None,  # ReDoc's page loads its script and fonts from CDNs
        lifespan=_caching,
    )
    app.state.engine = engine
    app.state.clock = clock
    app.state.inquiries = InquiryLimiter(inquiries_per_minute)
    app.state.webhook_allow_private = webhook_allow_private
    app.include_router(router, responses=PROBLEM_RESPONSES)
    app.include_router(webhook_router, responses=PROBLEM_RESPONSES)
    app.include_router(inbound_router, responses=PROBLEM_RESPONSES)
    app.include_router(health_router(lambda: app.state.engine))
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
        )

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        media_type = DOCS_ASSETS.get(name)
        if media_type is None:
            raise StarletteHTTPException(404, f"no docs asset {name!r}")
        return FileResponse(
            SWAGGER_UI / name, media_type=media_type, headers={"Cache-Control": "max-age=86400"}
        )

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(NoNul)  # the last added runs first

    @app.exception_handler(PunchcardError)
    async def _domain(_request: Request, error: PunchcardError) -> Response:
        status, body = from_domain(error)
        return Response(body, status_code=status, media_type="application/problem+json")

    @app.exception_handler(ApiProblem)
    async def _api(_request: Request, error: ApiProblem) -> Response:
        return problem(error.status, error.code, error.detail, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 400 and error.__cause__ is not None:
            # FastAPI could not parse the body (not UTF-8, nested too deeply): bad input, as a
            # JSON syntax error is.
            message = _unparseable(error.__cause__)
            errors = [{"path": "body", "message": message}]
            return problem(422, "invalid_input", f"body: {message}", errors=errors)
        status, detail, headers = error.status_code, str(error.detail), dict(error.headers or {})
        # Each code written out where it is answered: the Problem enum's test reads them here.
        if status == 404:
            return problem(status, "not_found", detail, headers)
        if status == 405:
            return problem(status, "method_not_allowed", detail, headers)
        return problem(status, "http_error", detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        if not is_json_media(request.headers.get("content-type", "application/json")) and any(
            e["loc"][:1] == ("body",) for e in error.errors()
        ):
            return problem(
                415,
                "unsupported_media_type",
                "send the body as a JSON object with Content-Type: application/json",
            )
        errors = [
            {"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in error.errors()
        ]
        first = errors[0] if errors else {"path": "body", "message": "invalid"}
        return problem(422, "invalid_input", f"{first['path']}: {first['message']}", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        route = request.scope.get("route")  # its template: no id, no control character
        where = route.path_format if isinstance(route, APIRoute) else repr(request.url.path)
        log.exception("unhandled error on %s %s", request.method, where)
        return problem(500, "internal", "something went wrong on our side; it has been logged")

    return app
