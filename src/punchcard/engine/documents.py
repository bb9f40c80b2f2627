"""YAML and JSON documents read with every number kept as its text and every key's line.

Money must be read from its decimal text, never through a binary float, and every
error must name the key path and line; PyYAML's safe loader does neither by itself.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import yaml

Path = tuple[str | int, ...]


class DocumentError(ValueError):
    """A document that is not well-formed YAML or JSON."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line


class _TextNumberLoader(yaml.SafeLoader):
    """Safe YAML with floats as Decimal, timestamps as their text, and no base-60 ints."""


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return _decimal_or_text(str(loader.construct_scalar(node)))


def _decimal_or_text(text: str) -> Any:
    """Plain decimals become Decimal; exponents, infinities and NaN stay text (and fail
    wherever a number is wanted): money and rates are written as plain decimals."""
    if not text.lstrip("+-").replace(".", "", 1).isdigit():
        return text
    return Decimal(text)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node))
    if ":" in text:  # YAML 1.1 sexagesimal: 14:00 is a time to a person, not 840
        return text
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _construct_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return str(loader.construct_scalar(node))


_TextNumberLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_TextNumberLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_TextNumberLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)


def load_document(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML (JSON is YAML too) into plain data and a map of key path -> 1-based line."""
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        try:
            return json.loads(text, parse_float=_decimal_or_text), {}
        except json.JSONDecodeError:
            pass  # flow-style YAML, or broken JSON: let YAML explain
    try:
        node = yaml.compose(text, Loader=_TextNumberLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DocumentError(str(exc).splitlines()[0], mark.line + 1 if mark else None) from exc
    if node is None:
        raise DocumentError("the document is empty")
    lines: dict[Path, int] = {}
    _collect_lines(node, (), lines)
    loader = _TextNumberLoader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    return data, lines


def _collect_lines(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _collect_lines(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_lines(item, (*path, index), lines)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of the deepest known key on the path (a missing key: its parent's line)."""
    for end in range(len(path), -1, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None


def format_path(path: Path) -> str:
    """A key path as people write it: `earn.exclude.skus[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def plain(value: Any) -> Any:
    """Loaded data with every Decimal back as its text: safe for JSON and YAML writers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    return value
