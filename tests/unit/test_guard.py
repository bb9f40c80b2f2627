"""Every guarded route says who may call it: forgetting fails at import, not in production."""

from __future__ import annotations

import pytest
from fastapi import APIRouter

from punchcard.api.context import Call
from punchcard.api.guard import GuardedRoute, declared, keyless, needs


def test_a_route_that_names_no_scope_and_is_not_keyless_is_refused() -> None:
    router = APIRouter(route_class=GuardedRoute)
    with pytest.raises(TypeError, match="/open: a guarded route takes one `needs"):

        @router.get("/open")
        def forgot() -> None: ...


def test_a_route_that_names_two_guards_is_refused() -> None:
    router = APIRouter(route_class=GuardedRoute)
    with pytest.raises(TypeError, match="/twice"):

        @router.get("/twice")
        def twice(a: Call = needs("members:read"), b: Call = needs("admin")) -> None: ...


def test_a_keyless_route_and_a_scoped_route_are_taken() -> None:
    router = APIRouter(route_class=GuardedRoute)

    @router.post("/signed")
    @keyless
    def signed() -> None: ...

    @router.get("/scoped")
    def scoped(c: Call = needs("orders:read")) -> None: ...

    routes = {r.path: r for r in router.routes if isinstance(r, GuardedRoute)}
    assert declared(routes["/signed"]) is None
    guard = declared(routes["/scoped"])
    assert guard is not None and guard.scopes == ("orders:read",)
