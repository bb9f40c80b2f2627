"""Every successful JSON answer a test receives is checked against the OpenAPI document the
server publishes: the e2e suite walks every endpoint on purpose, so every declared 2xx shape
is held to what the routes really send (schemathesis only reaches the 2xx it happens to).
`check_event` holds a webhook message's body to the document's `webhooks` the same way."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import httpx
import jsonschema_rs


@cache
def _document(base_url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base_url}/openapi.json", timeout=30).json())


@cache
def _templates(base_url: str) -> list[tuple[re.Pattern[str], str]]:
    """Path templates as patterns, literal ones first (`/gift-cards/inquiries` before
    `/gift-cards/{card_id}`)."""
    paths = sorted(_document(base_url)["paths"], key=lambda p: (p.count("{"), p))
    return [(re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", p) + "$"), p) for p in paths]


@cache
def _validator(base_url: str, template: str, method: str, status: str) -> Any:
    document = _document(base_url)
    answer = document["paths"][template][method]["responses"].get(status)
    assert answer is not None, f"{method.upper()} {template}: {status} is not declared"
    schema = answer["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def check_shape(response: httpx.Response) -> None:
    """An httpx response hook: a 2xx JSON body must match its operation's declared schema."""
    kind = response.headers.get("content-type", "")
    if not 200 <= response.status_code < 300 or not kind.startswith("application/json"):
        return
    request = response.request
    base = f"{request.url.scheme}://{request.url.netloc.decode()}"
    path, method = request.url.path, request.method.lower()
    if path == "/openapi.json":
        return
    for pattern, template in _templates(base):
        if pattern.match(path) and method in _document(base)["paths"][template]:
            break
    else:
        raise AssertionError(f"{method.upper()} {path} is in no path of the OpenAPI document")
    response.read()
    validator = _validator(base, template, method, str(response.status_code))
    errors = [e.message for e in validator.iter_errors(json.loads(response.content))]
    assert not errors, f"{method.upper()} {path} {response.status_code}: {errors[:3]}"


@cache
def _event_validator(base_url: str, event_type: str) -> Any:
    document = _document(base_url)
    hook = document.get("webhooks", {}).get(event_type)
    assert hook is not None, f"the event type {event_type!r} is not in the document's webhooks"
    schema = hook["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": document["components"]}, validate_formats=True
    )


def check_event(base_url: str, body: bytes) -> None:
    """A webhook message's body must match its event type's schema, formats included."""
    event = json.loads(body)
    validator = _event_validator(base_url, str(event.get("type")))
    errors = [e.message for e in validator.iter_errors(event)]
    assert not errors, f"{event.get('type')}: {errors[:3]} in {event}"
