"""Who may call a route: the API key and its scope, checked before anything else is looked at.

A route names its scope in its signature (`c: Call = needs("members:write")`). `GuardedRoute`
checks the key, then the scope, then the query parameters, then the ids in the path
(names.py: no refused character, read in NFC), then the body's text (strict_json.py: UTF-8,
no key given twice, no lone surrogate in any string or key), and only then lets FastAPI parse
the body. So a caller without a key, or with a key that lacks the scope, is told only that:
not whether its JSON parsed, its body was valid or its query had a typo.

A key this process has cached (services/caches.py) is authenticated in the event loop: the
request's only thread hop is then its handler's own. Only a miss reads the database, in the
thread pool.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.responses import Response

from punchcard import names
from punchcard.api.context import Call, authenticated, consistency_wanted, request_secret
from punchcard.api.problems import ApiProblem
from punchcard.errors import InvalidInput
from punchcard.services import tenants
from punchcard.services.clock import Clock
from punchcard.strict_json import is_json_media, problem

# per (path, method): the query parameters it declares, and those of them that take a list
_QUERY: dict[tuple[str, str], tuple[frozenset[str], frozenset[str]]] = {}


class Needs:
    """A route's dependency on its caller: authenticated, holding every one of `scopes`, and
    for each query parameter in `per_query` that the request uses, that parameter's scope."""

    def __init__(self, scopes: tuple[str, ...], per_query: dict[str, str]) -> None:
        self.scopes = scopes
        self.per_query = per_query

    def check(self, c: Call, request: Request) -> None:
        asked = [s for param, s in self.per_query.items() if param in request.query_params]
        for scope in [*self.scopes, *asked]:
            c.require(scope)
        if (
            self.per_query
            and not asked
            and not any(map(c.principal.allows, self.per_query.values()))
        ):
            c.require(next(iter(self.per_query.values())))  # a key that could ask for none

    def security(self) -> list[dict[str, list[str]]]:
        """As OpenAPI says it: the scopes, or each per-query scope as one alternative."""
        if self.per_query:
            return [{"apiKey": [*self.scopes, s]} for s in self.per_query.values()]
        return [{"apiKey": list(self.scopes)}]

    async def __call__(self, request: Request) -> Call:
        """Async, so FastAPI reads it in the event loop: a sync dependency would cost every
        request a thread hop of its own besides its route's."""
        found: Call = request.state.call  # GuardedRoute put it there before the body was read
        return found


def needs(*scopes: str, per_query: dict[str, str] | None = None) -> Any:
    """The authenticated caller, as a parameter default. No scope: any valid key."""
    return Depends(Needs(scopes, per_query or {}))


F = TypeVar("F", bound=Callable[..., Any])


def keyless(endpoint: F) -> F:
    """Marks a route that takes no API key on purpose (it is authenticated another way, as
    inbound events are by their signature). Any other route without `needs` is refused."""
    endpoint.__dict__["punchcard_keyless"] = True
    return endpoint


def declared(route: APIRoute) -> Needs | None:
    """The route's `needs(...)`, if it takes an API key."""
    found = [d.call for d in route.dependant.dependencies if isinstance(d.call, Needs)]
    return found[0] if found else None


class GuardedRoute(APIRoute):
    """An APIRoute that authorizes its caller before FastAPI parses the body. A route must
    say who may call it: one `needs(...)`, or `@keyless`; forgetting is an error at import,
    not a public route."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        count = sum(isinstance(d.call, Needs) for d in self.dependant.dependencies)
        if count > 1 or (count == 0 and not endpoint.__dict__.get("punchcard_keyless")):
            raise TypeError(
                f"{path}: a guarded route takes one `needs(...)`, or is marked @keyless"
            )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        guard = declared(self)
        if guard is None:  # signed by other means (inbound events)
            return handler
        bodyless = self.body_field is None and not (self.methods or set()) <= {"GET", "HEAD"}

        async def guarded(request: Request) -> Response:
            body = await request.body()
            state = request.app.state
            c = _cached(request, state.engine, state.clock, body)
            if c is None:
                c = await run_in_threadpool(authenticated, request, state.engine, state.clock, body)
            guard.check(c, request)
            _check_query(request)
            _normal_path(request)
            if bodyless:
                # Nothing to read, so nothing may be sent but nothing or `{}`: a body that
                # means something (`{"refund_all": true}`) or is broken is refused, not
                # ignored, and a retry with or without `{}` is the same request.
                if body.strip() not in (b"", b"{}"):
                    raise InvalidInput("body: this endpoint takes no body; send none, or {}")
                c.body = b""
            elif body and is_json_media(request.headers.get("content-type", "")):
                wrong = problem(body)
                if wrong is not None:
                    raise InvalidInput(wrong)
            if request.method == "GET":
                c.wanted = consistency_wanted(c)
            request.state.call = c
            return await handler(request)

        return guarded


def _cached(request: Request, engine: sa.Engine, clock: Clock, body: bytes) -> Call | None:
    """The caller, as `authenticated` makes it, when its key is in this process's cache (a
    dict read, no database, so no thread hop); None for anything else, which `authenticated`
    answers (a missing or malformed header, a key not cached, an unknown one)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return None
    key = key.strip()
    principal = tenants.cached(engine, key)
    if principal is None:
        return None
    return Call(principal, engine, clock, request, body, request_secret(key))


def _normal_path(request: Request) -> None:
    """Path parameters are ids, held to the rule of ids in bodies: a refused character is
    422 naming the parameter, and each is read in NFC, so `GET /v1/members/{id}` with the
    NFD spelling finds the member enrolled with the NFC one."""
    params: dict[str, Any] = request.scope.get("path_params", {})
    for name, value in params.items():
        wrong = names.problem(value) if isinstance(value, str) else None
        if wrong is not None:
            raise InvalidInput(f"path.{name}: {wrong}")
    request.scope["path_params"] = {
        name: names.normal(value) if isinstance(value, str) else value
        for name, value in params.items()
    }


def _check_query(request: Request) -> None:
    """A query parameter the route does not take is refused, not ignored: `?limt=10` is a typo
    to be told about. One that takes a single value and is given twice is refused too:
    which one counts would be a guess (as for a JSON key given twice)."""
    if not request.query_params:
        return
    route = (request.scope["route"].path_format, request.method.lower())
    if route not in _QUERY:  # what the published OpenAPI document declares (it is built once)
        operation = request.app.openapi()["paths"][route[0]][route[1]]
        query = [p for p in operation.get("parameters", []) if p["in"] == "query"]
        listed = [p["name"] for p in query if p["schema"].get("type") == "array"]
        _QUERY[route] = frozenset(p["name"] for p in query), frozenset(listed)
    allowed, lists = _QUERY[route]
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise ApiProblem(
            422,
            "invalid_input",
            f"unknown query parameter {unknown[0]!r}; this endpoint takes "
            + (", ".join(sorted(allowed)) or "none"),
        )
    twice = sorted(n for n in set(names) if names.count(n) > 1 and n not in lists)
    if twice:
        raise ApiProblem(422, "invalid_input", f"query parameter {twice[0]!r} is given twice")
