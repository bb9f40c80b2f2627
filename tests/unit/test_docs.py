"""The docs hold together: the diagrams in docs/architecture.md are what the transition tables
render, every rule a page cites is stated in docs/programs.md, every link to a section lands
on one, and nothing in the repository points outside it (a clone has no shared folder)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

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


FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
RULE_MENTION = re.compile(r"\b[Rr]ules? (\d+(?:(?:, |,? and |-| to )\d+)*)")
RULE_HEADING = re.compile(r"^### Rule (\d+): (.+)$", re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _prose(path: Path) -> str:
    """A Markdown file without its fenced code blocks (a YAML comment is no heading)."""
    return FENCE.sub("", path.read_text())


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces
    to hyphens, and -1, -2 after a repeated one."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#+ (.+)$", _prose(path), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def test_programs_doc_states_rules_1_to_14_in_order_and_rule_15_only_as_planned() -> None:
    headings = RULE_HEADING.findall((ROOT / "docs" / "programs.md").read_text())
    assert [int(number) for number, _ in headings] == list(range(1, 16))
    assert [title for number, title in headings if "planned" in title] == [
        "stores and channels (planned)"
    ]


def test_every_rule_a_doc_cites_is_stated_in_programs_doc() -> None:
    stated = {
        int(number): title
        for number, title in RULE_HEADING.findall((ROOT / "docs" / "programs.md").read_text())
    }
    wrong = []
    for path in DOCS:
        for mention in RULE_MENTION.finditer(_prose(path)):
            for number in map(int, re.findall(r"\d+", mention.group(1))):
                planned = "planned" in stated.get(number, "planned")
                # Only docs/programs.md may name a planned rule, and only to say it is planned.
                if number not in stated or (planned and path.name != "programs.md"):
                    wrong.append(f"docs/{path.name}: {mention.group(0)!r}")
    assert wrong == [], "rules cited but not stated (as holding) in docs/programs.md"


def test_every_link_to_a_doc_lands_on_a_file_and_section_that_exist() -> None:
    broken = []
    for path in [ROOT / "README.md", *DOCS]:
        for target in LINK.findall(_prose(path)):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such section)")
    assert broken == []


def test_no_file_in_the_repository_points_outside_it() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    # Built from parts, so this file does not match itself.
    outside = [
        "/".join(("..", "shared")).encode(),
        "/".join(("shared", "spec")).encode(),
        "/".join(("shared", "examples")).encode(),
    ]
    tracked = subprocess.run(
        [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    offending = []
    for name in filter(None, tracked):
        path = ROOT / name.decode()
        if path.is_file():
            data = path.read_bytes()
            offending += [f"{name.decode()}: {p.decode()}" for p in outside if p in data]
    assert offending == [], (
        "these tracked files point outside the repository, where a clone has nothing: "
        "restate or copy what they need inside it (docs/programs.md, examples/)"
    )
