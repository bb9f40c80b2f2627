"""The engine stays pure: it imports no store, service, API or clock."""

from __future__ import annotations

import ast
from pathlib import Path

import punchcard.engine

ENGINE = Path(punchcard.engine.__file__).parent
FORBIDDEN_MODULES = (
    "punchcard.store",
    "punchcard.services",
    "punchcard.api",
    "punchcard.scenarios",
    "sqlalchemy",
    "alembic",
    "httpx",
    "time",
    "os",
    "socket",
)
FORBIDDEN_CALLS = ("now", "utcnow", "today")  # the time module itself is a forbidden import


def _modules() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def test_the_engine_imports_no_io_or_outer_layer() -> None:
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(FORBIDDEN_MODULES), f"{path.name} imports {name}"


def test_the_engine_never_reads_the_clock() -> None:
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in FORBIDDEN_CALLS, (
                    f"{path.name}:{node.lineno} reads the clock"
                )
