"""Reading scenario files: the story, its program's text, and its steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punchcard.engine.documents import DocumentError, load_document
from punchcard.services.programs import program_text


class ScenarioFileError(ValueError):
    """A scenario file that can not be run at all."""


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    program: str  # program source text
    start: str
    steps: list[dict[str, Any]]


def find_files(paths: list[Path]) -> list[Path]:
    """Each file named, and every *.yaml below each folder named, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.yaml") if not _is_program(p))
        else:
            found.append(path)
    return found


def _is_program(path: Path) -> bool:
    # Programs shared by scenarios live beside them; they are not stories.
    return path.parent.name == "programs"


def load(path: Path) -> Scenario:
    try:
        data, _ = load_document(path.read_text())
    except (OSError, DocumentError) as exc:
        raise ScenarioFileError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioFileError(f"{path}: a scenario is a mapping")
    for key in ("scenario", "program", "start", "steps"):
        if key not in data:
            raise ScenarioFileError(f"{path}: {key} is required")
    unknown = sorted(set(data) - {"scenario", "program", "start", "steps"})
    if unknown:
        raise ScenarioFileError(f"{path}: unknown key {unknown[0]}")
    if not isinstance(data["steps"], list):
        raise ScenarioFileError(f"{path}: steps is a list")
    return Scenario(
        path=path,
        name=str(data["scenario"]),
        program=resolve_program(data["program"], path.parent),
        start=str(data["start"]),
        steps=data["steps"],
    )


def resolve_program(value: Any, base: Path) -> str:
    """A program given as a path relative to the scenario, or inline."""
    if isinstance(value, str):
        try:
            return (base / value).read_text()
        except OSError as exc:
            raise ScenarioFileError(f"program {value}: {exc}") from exc
    if isinstance(value, dict):
        return program_text(value)
    raise ScenarioFileError("program: a path or an inline program")
