"""Reading scenario files: the story, its program's text, and its steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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
    """Each file named, and every *.yaml below each folder named, sorted; a folder's program
    files (which scenarios name by path) are not stories and are left out."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.yaml") if not _is_program(p))
        else:
            found.append(path)
    return found


def _is_program(path: Path) -> bool:
    """A program, not a story: a mapping with `program` and `currency` and no `scenario` or
    `steps`. Anything unreadable counts as a story, so that loading it reports why."""
    try:
        data, _ = load_document(path.read_text())
    except (OSError, DocumentError):
        return False
    return (
        isinstance(data, dict)
        and {"program", "currency"} <= data.keys()
        and not {"scenario", "steps"} & data.keys()
    )


class InlineProgram(str):
    """An inline program's own text, cut from the scenario file and set at the same lines
    there, so a problem in it names the scenario file's line."""


def load(path: Path) -> Scenario:
    try:
        text = path.read_text()
        data, _ = load_document(text)
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
    _inline_programs_in_place(text, data)
    return Scenario(
        path=path,
        name=str(data["scenario"]),
        program=resolve_program(data["program"], path.parent),
        start=str(data["start"]),
        steps=data["steps"],
    )


def _value(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _cut(text: str, node: Any, wanted: Any) -> InlineProgram | None:
    """The text of a mapping node, at its own lines and column; None unless it reads back as
    exactly what the whole file gave (an alias to elsewhere in the file would not)."""
    if not isinstance(node, yaml.MappingNode):
        return None
    start, end = node.start_mark, node.end_mark
    piece = "\n" * start.line + " " * start.column + text[start.index : end.index]
    try:
        loaded, _ = load_document(piece)
    except DocumentError:
        return None
    return InlineProgram(piece) if loaded == wanted else None


def _inline_programs_in_place(text: str, data: dict[str, Any]) -> None:
    """Replace each inline program (the scenario's, and each `publish` step's) by its text
    as written, when it can be cut out; otherwise it stays data, written out anew."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    if isinstance(data["program"], dict):
        data["program"] = _cut(text, _value(root, "program"), data["program"]) or data["program"]
    nodes = _value(root, "steps")
    if not isinstance(nodes, yaml.SequenceNode):
        return
    for step, node in zip(data["steps"], nodes.value, strict=False):
        publish = step.get("publish") if isinstance(step, dict) else None
        if isinstance(publish, dict) and isinstance(publish.get("program"), dict):
            cut = _cut(text, _value(_value(node, "publish"), "program"), publish["program"])
            publish["program"] = cut or publish["program"]


def resolve_program(value: Any, base: Path) -> str:
    """A program given as a path relative to the scenario, or inline."""
    if isinstance(value, InlineProgram):
        return str(value)
    if isinstance(value, str):
        try:
            return (base / value).read_text()
        except OSError as exc:
            raise ScenarioFileError(f"program {value}: {exc}") from exc
    if isinstance(value, dict):
        return program_text(value)
    raise ScenarioFileError("program: a path or an inline program")
