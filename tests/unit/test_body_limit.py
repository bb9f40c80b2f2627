"""The body limit reads a declared Content-Length only when it is ASCII digits."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from punchcard.api.app import BodyLimit


def _through(declared: bytes, body: bytes, max_bytes: int) -> tuple[bytes | None, list[Message]]:
    """Runs one request through BodyLimit; returns the body the app saw and what was sent."""
    seen: list[bytes] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((await receive())["body"])

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-length", declared)],
    }
    asyncio.run(BodyLimit(app, max_bytes)(scope, receive, send))
    return (seen[0] if seen else None), sent


def test_a_unicode_digit_content_length_is_not_read_as_a_number() -> None:
    # headers are Latin-1: "²".isdigit() is true and int("²") raises; the body is measured instead
    assert _through("²".encode("latin-1"), b"{}", 10) == (b"{}", [])


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read() -> None:
    seen, sent = _through(b"11", b"{}", 10)
    assert seen is None
    assert sent[0]["status"] == 413
