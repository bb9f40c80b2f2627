"""Every endpoint, fuzzed from the OpenAPI document a real server publishes: never a 5xx, and
every answer (status, content type, body, headers) is one the document declares.

schemathesis reads `/openapi.json` from a running `punchcard serve`, generates valid and
invalid requests for each operation (bodies, path and query parameters, headers) and sends
them over HTTP with the admin key of a named sandbox. Each Idempotency-Key it generates is
replaced by a fresh one, so a write reaches the use case instead of replaying the first answer.

Not checked: `positive_data_acceptance` (a request the schema allows must succeed). The schema
says what a request looks like, not whether it makes sense: a program source that is not a
program, an amount with three decimals, a duration that is not one, a reward the member can
not afford, are all schema-valid and rightly answered with a 4xx problem.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Server

EXAMPLES_PER_OPERATION = 12  # ~50 operations, x2 modes: about 25 s on SQLite (half on PostgreSQL)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
]


# Headers that frame the HTTP message: the HTTP server answers a broken one (a Content-Length
# that is not a number) before any route sees the request, in plain text, as HTTP says it may.
# Negative generation sometimes adds one among its random headers; they are not the API's.
FRAMING = {"content-length", "transfer-encoding", "host", "connection"}


@pytest.fixture(scope="module")
def sandbox_key(server: Server) -> str:
    """The admin key of a named sandbox of tenant A, with the demo program."""
    with server.client(server.a["sandbox_key"]) as http:
        made = http.post(
            "/v1/sandboxes",
            json={"name": "schemathesis", "start": "2026-03-03T12:00:00Z"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
    assert made.status_code == 201, made.text
    key = str(made.json()["key"])
    # Generated ids start small ("0"): let those name real things, so requests go past not_found.
    line = {"id": "0", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}
    with server.client(key) as http:
        for path, body in [
            ("/v1/members", {"id": "0"}),
            ("/v1/orders", {"id": "0", "member": "0", "status": "open", "lines": [line]}),
            ("/v1/gift-cards", {"id": "0", "amount": "50.00"}),
            ("/v1/gift-cards/0/holds", {"id": "0", "amount": "5.00"}),
        ]:
            answer = http.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
            assert answer.status_code == 201, answer.text
    return key


def _fuzz(
    operation: schemathesis.APIOperation, mode: GenerationMode, url: str, key: str, examples: int
) -> list[str]:
    """Send generated requests for one operation; the failure reports, at most three."""
    failures: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def send(case: schemathesis.Case) -> None:
        if case.headers and "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
        if case.headers:
            for name in [n for n in case.headers if n.lower() in FRAMING]:
                del case.headers[name]
        try:
            case.call_and_validate(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS, timeout=30
            )
        except FailureGroup as failure:
            if len(failures) < 3:
                failures.append(f"{operation.label} ({mode.value}): {failure}")

    try:
        send()
    except Unsatisfiable:
        # Nothing of this operation can be made invalid (no body, only free-text parameters).
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


def test_every_endpoint_answers_as_its_openapi_document_says(
    server: Server, sandbox_key: str
) -> None:
    # Loaded over HTTP from the server under test, so the document checked is the one served.
    schema = schemathesis.openapi.from_url(
        f"{server.url}/openapi.json", config=schemathesis.Config.from_dict({})
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    # PostgreSQL runs the same code over a slower store: fewer examples keep the suite's budget.
    examples = EXAMPLES_PER_OPERATION // (1 if server.database.startswith("sqlite") else 2)
    failures = [
        report
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for report in _fuzz(operation, mode, server.url, sandbox_key, examples)
    ]
    assert not failures, "\n\n".join(failures)


def test_the_document_declares_problems_keys_and_idempotency(server: Server) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    enroll = document["paths"]["/v1/members"]["post"]
    problems = enroll["responses"]["4XX"]["content"]["application/problem+json"]
    assert problems["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert enroll["security"] == [{"apiKey": ["members:write"]}]
    assert {"name": "Idempotency-Key", "in": "header", "required": True}.items() <= (
        enroll["parameters"][0].items()
    )
    receive = document["paths"]["/v1/inbound/{source_id}"]["post"]
    assert "security" not in receive  # signed by the source, no key
    signed = {(p["name"], p["in"], p["required"]) for p in receive["parameters"]}
    assert signed == {
        ("source_id", "path", True),
        ("X-Punchcard-Timestamp", "header", True),
        ("X-Punchcard-Signature", "header", True),
    }
    timeline = document["paths"]["/v1/members/{member_id}/timeline"]["get"]
    assert [(p["name"], p["in"]) for p in timeline["parameters"]] == [
        ("member_id", "path"),
        ("cursor", "query"),
        ("limit", "query"),
        ("consistency_token", "query"),
        ("wait_ms", "query"),
        ("Consistency-Token", "header"),
    ]
    assert timeline["parameters"][4]["schema"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 5000,
        "default": 0,
    }
    assert "security" not in document["paths"]["/healthz"]["get"]
