"""The diagrams in docs/architecture.md are exactly what the transition tables render."""

from __future__ import annotations

from punchcard.engine.programs import parse_program
from punchcard.lifecycle.machines import diagram

from ..conftest import EXAMPLE_PROGRAM, ROOT


def test_architecture_doc_shows_the_diagrams_the_code_renders() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    program = parse_program(EXAMPLE_PROGRAM.read_text())
    for name in ("order", "reward", "hold", "points_lot", "tier"):
        rendered = diagram(name, program if name == "tier" else None)
        assert f"```mermaid\n{rendered}\n```" in text, (
            f"docs/architecture.md: {name} diagram drifted"
        )
