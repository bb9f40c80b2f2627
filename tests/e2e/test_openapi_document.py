"""The document a real server publishes, and the page that shows it.

- `/docs` works offline: the page loads Swagger UI from the server itself (the package's
  static/swagger-ui), never from a CDN or any other host.
- Every operation has a camelCase operationId, unique in the document.
- The Problem schema's `code` enum is every code the code base can answer. The codes are read
  from the source: the code written in each call that makes a problem (`ApiProblem`,
  `problem`, `problem_body` of punchcard.api.problems), anywhere in the package, and the code
  of every domain error class. A code added anywhere and not to the enum fails here.
- `webhooks` names every event type the service sends (test_openapi_in_use.py checks real
  messages against it).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import httpx

import punchcard
from punchcard.api.problems import PROBLEM_CODES
from punchcard.errors import PunchcardError
from punchcard.services.webhooks import EVENT_TYPES

from .conftest import Server

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src/punchcard"
VENDORED = SOURCE / "api/static/swagger-ui"
MAKERS = {"ApiProblem", "problem", "problem_body"}  # the code is their second argument


def _makers_in(tree: ast.Module, module: str) -> set[str]:
    """How this module names punchcard.api.problems' problem makers: `problem`, or
    `problems.problem` after `from punchcard.api import problems`."""
    if module == "punchcard.api.problems":
        return set(MAKERS)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "punchcard.api.problems":
            names |= {a.asname or a.name for a in node.names if a.name in MAKERS}
        if isinstance(node, ast.ImportFrom) and node.module == "punchcard.api":
            for alias in node.names:
                if alias.name == "problems":
                    names |= {f"{alias.asname or 'problems'}.{m}" for m in MAKERS}
    return names


def _callee(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
        return f"{call.func.value.id}.{call.func.attr}"
    return ""


def _written_codes() -> tuple[set[str], list[str]]:
    """Each code written in a call that makes a problem; and the calls whose code is neither
    written out nor an error's own `.code` passed on (which this scan could not see)."""
    codes: set[str] = set()
    unseen: list[str] = []
    for path in sorted(SOURCE.rglob("*.py")):
        module = "punchcard." + ".".join(path.relative_to(SOURCE).with_suffix("").parts)
        tree = ast.parse(path.read_text(), str(path))
        makers = _makers_in(tree, module)
        # A maker that hands its own `code` parameter on to another (`problem` to
        # `problem_body`) answers only the codes its callers write.
        forwarding = {
            id(call)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef) and fn.name in MAKERS
            for call in ast.walk(fn)
            if isinstance(call, ast.Call)
        }
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if id(call) in forwarding:
                continue
            if _callee(call) == "PunchcardError":
                unseen.append(f"{path.name}:{call.lineno}: raises the base error (code 'error')")
            if _callee(call) not in makers:
                continue
            given = {k.arg: k.value for k in call.keywords}
            code = call.args[1] if len(call.args) > 1 else given.get("code")
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                codes.add(code.value)
            elif not (isinstance(code, ast.Attribute) and code.attr == "code"):
                unseen.append(f"{path.name}:{call.lineno}: {ast.unparse(call)[:80]}")
    return codes, unseen


def _domain_codes() -> set[str]:
    """The code of every domain error class, wherever in the package it is declared."""
    for found in pkgutil.walk_packages(punchcard.__path__, "punchcard."):
        if not found.name.startswith("punchcard.store.migrations"):  # env.py runs on import
            importlib.import_module(found.name)
    codes: set[str] = set()
    pending = list(PunchcardError.__subclasses__())
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return codes


def test_the_problem_code_enum_is_every_code_the_code_base_answers(sqlite_server: Server) -> None:
    written, unseen = _written_codes()
    assert unseen == []
    assert {"body_too_large", "rate_limited", "sandbox_busy", "internal"} <= written  # a sample
    document = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    code = document["components"]["schemas"]["Problem"]["properties"]["code"]
    assert code["type"] == "string"
    assert sorted(code["enum"]) == sorted(written | _domain_codes())


def test_every_operation_has_a_camel_case_operation_id_unique_in_the_document(
    sqlite_server: Server,
) -> None:
    document = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    operations = [
        (f"{method.upper()} {path}", operation.get("operationId", ""))
        for section in (document["paths"], document["webhooks"])
        for path, item in section.items()
        for method, operation in item.items()
    ]
    ids = [operation_id for _, operation_id in operations]
    assert [o for o in operations if not re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", o[1])] == []
    assert len(ids) == len(set(ids))
    named = dict(operations)
    assert named["POST /v1/members"] == "enrollMember"
    assert named["GET /v1/members/{member_id}/balance"] == "getMemberBalance"
    assert named["POST /v1/orders"] == "placeOrder"
    assert named["POST /v1/orders/{order_id}/refunds"] == "refundOrder"
    assert named["POST /v1/inbound/{source_id}"] == "receiveInboundEvent"
    assert named["POST points.posted"] == "onPointsPosted"


def test_the_document_describes_each_event_type_the_service_sends(sqlite_server: Server) -> None:
    document = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    assert list(document["webhooks"]) == list(EVENT_TYPES)
    posted = document["webhooks"]["points.posted"]["post"]
    assert posted["operationId"] == "onPointsPosted"
    assert posted["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PointsPostedEvent"
    }
    assert [p["name"] for p in posted["parameters"]] == [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    envelope = document["components"]["schemas"]["PointsPostedEvent"]
    assert envelope["properties"]["type"] == {"type": "string", "const": "points.posted"}
    data = document["components"]["schemas"]["PointsPosted"]
    assert data["required"] == ["member", "member_seq", "order", "points", "paid_debt"]
    assert data["additionalProperties"] is False


def test_the_docs_page_loads_only_the_servers_own_assets(sqlite_server: Server) -> None:
    page = httpx.get(f"{sqlite_server.url}/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert re.findall(r"https?://", page.text) == []  # no other host, nor a full URL at all
    links = re.findall(r"""(?:src|href)="([^"]*)"|url: '([^']*)'""", page.text)
    urls = sorted(a or b for a, b in links)
    assert urls == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
    ]
    kinds = {}
    for url in urls:
        answer = httpx.get(f"{sqlite_server.url}{url}")
        assert answer.status_code == 200, url
        kinds[url] = answer.headers["content-type"]
        if url.startswith("/docs/assets/"):
            assert answer.content == (VENDORED / url.rsplit("/", 1)[1]).read_bytes()
    assert kinds == {
        "/docs/assets/favicon-32x32.png": "image/png",
        "/docs/assets/swagger-ui-bundle.js": "text/javascript; charset=utf-8",
        "/docs/assets/swagger-ui.css": "text/css; charset=utf-8",
        "/openapi.json": "application/json",
    }


def test_only_the_pages_assets_are_served(sqlite_server: Server) -> None:
    for name in ("LICENSE", "README.md", "..%2Fapp.py", "swagger-ui.js"):
        answer = httpx.get(f"{sqlite_server.url}/docs/assets/{name}")
        assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), name
    # ReDoc's page loads its script and fonts from CDNs: it is not served.
    assert httpx.get(f"{sqlite_server.url}/redoc").status_code == 404


def test_docs_openapi_md_lists_every_operation_code_and_event_as_served(
    sqlite_server: Server,
) -> None:
    document = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    page = (ROOT / "docs/openapi.md").read_text()
    operations = {
        operation["operationId"]: f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert dict(re.findall(r"^\| `(\w+)` \| `([A-Z]+ [^`]+)` \|$", page, re.M)) == operations
    codes = [
        (code, None if status == "varies" else int(status), when)
        for code, status, when in re.findall(r"^\| `(\w+)` \| (\d+|varies) \| (.+) \|$", page, re.M)
    ]
    assert codes == [
        (code, *PROBLEM_CODES[code])
        for code in document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
    ]
    events = re.findall(r"^\| `([\w.]+)` \| `(\w+Event)` \| `(\w+)` \|$", page, re.M)
    schemas = document["components"]["schemas"]
    served = []
    for event_type, hook in document["webhooks"].items():
        body = hook["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        envelope = body.rsplit("/", 1)[1]
        data = schemas[envelope]["properties"]["data"]["$ref"].rsplit("/", 1)[1]
        served.append((event_type, envelope, data))
    assert events == served
