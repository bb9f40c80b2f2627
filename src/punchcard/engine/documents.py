"""YAML and JSON documents read with every number kept as its text and every key's line.

Money must be read from its decimal text, never through a binary float, and every
error must name the key path and line; PyYAML's safe loader does neither by itself.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import yaml

from punchcard import names

Path = tuple[str | int, ...]


class DocumentError(ValueError):
    """A document that is not well-formed YAML or JSON."""

    def __init__(self, message: str, line: int | None = None, path: Path = ()) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.message, self.line, self.path = message, line, path


class _TextNumberLoader(yaml.SafeLoader):
    """Safe YAML with numbers read from their decimal text (floats as Decimal) and
    timestamps as their text."""


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return _decimal_or_text(str(loader.construct_scalar(node)))


def _decimal_or_text(text: str) -> Any:
    """Plain decimals become Decimal; exponents, infinities and NaN stay text (and fail
    wherever a number is wanted): money and rates are written as plain decimals."""
    digits = text.lstrip("+-").replace(".", "", 1)
    if not (digits.isascii() and digits.isdigit()):
        return text
    return Decimal(text)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """Whole numbers are read as decimal text, as money is: `010` is ten (YAML 1.1 would
    read eight). Other forms YAML 1.1 reads as numbers stay text and fail where a number
    is wanted: `0x2`, `0b1`, `1_000`, and `14:00` (base 60: a time to a person, not 840)."""
    return _int_or_text(str(loader.construct_scalar(node)))


def _construct_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return str(loader.construct_scalar(node))


def _refuse(_loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """Bytes and sets are YAML values no program key takes, and JSON can not store them."""
    raise yaml.constructor.ConstructorError(
        None, None, f"{node.tag.rsplit(':', 1)[-1]} values are not allowed", node.start_mark
    )


_TextNumberLoader.add_constructor("tag:yaml.org,2002:binary", _refuse)
_TextNumberLoader.add_constructor("tag:yaml.org,2002:set", _refuse)
_TextNumberLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_TextNumberLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_TextNumberLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)

MAX_DEPTH = 64  # a program is about 6 levels deep; parsers recurse, so deeper is refused first
MAX_NODES = 100_000  # values after aliases are expanded: an alias bomb stops here


def load_document(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML (JSON is YAML too) into plain data and a map of key path -> 1-based line.

    Refused with a DocumentError that names a line: malformed text, nesting deeper than
    MAX_DEPTH, more than MAX_NODES values once aliases are expanded, and a key given twice.
    """
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        _check_bracket_depth(text)
        try:
            data = json.loads(
                text,
                parse_float=_decimal_or_text,
                parse_int=_int_or_text,
                object_pairs_hook=_no_duplicates,
            )
        except json.JSONDecodeError:
            pass  # flow-style YAML, or broken JSON: let YAML explain
        except DocumentError as duplicate:
            _json_lines(text)  # names the duplicate's line when YAML can read the text
            raise duplicate
        else:
            lines = _json_lines(text)
            return _texts(data, lines), lines
    try:
        _check_yaml_depth(text)
        node = yaml.compose(text, Loader=_TextNumberLoader)
    except yaml.YAMLError as exc:
        raise _document_error(exc) from exc
    if node is None:
        raise DocumentError("the document is empty", 1)
    lines = _lines(node)
    loader = _TextNumberLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:  # e.g. a key that is a list or mapping
        raise _document_error(exc) from exc
    finally:
        loader.dispose()
    return _texts(data, lines), lines


def _texts(data: Any, lines: dict[Path, int]) -> Any:
    """The loaded data with every text in NFC (names.py: ids, skus and tier names have one
    spelling, as the API reads them), refusing a lone surrogate: an escape (`"\\ud800"`, in
    JSON or YAML) makes one, and no database column or answer can hold it."""
    if isinstance(data, str):
        if not _encodes(data):
            raise DocumentError("a lone surrogate is not text", 1)
        return names.normal(data)
    if not isinstance(data, dict | list):
        return data
    stack: list[tuple[Any, Path]] = [(data, ())]  # nesting is bounded (MAX_DEPTH), work is not
    while stack:
        item, path = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in list(pairs):
            here = (*path, key)
            line = line_of(lines, here)
            if isinstance(key, str) and not _encodes(key):  # its path could not be printed
                raise DocumentError("a key holds a lone surrogate, which is not text", line, path)
            if isinstance(child, str):
                if not _encodes(child):
                    raise DocumentError("a lone surrogate is not text", line, here)
                item[key] = names.normal(child)
            elif isinstance(child, dict | list):
                stack.append((child, here))
    return data


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_lines(text: str) -> dict[Path, int]:
    """The key lines of JSON text, read as YAML (JSON's superset); line 1 for all if YAML 1.1
    reads the text otherwise."""
    try:
        return _lines(yaml.compose(text, Loader=_TextNumberLoader))
    except yaml.YAMLError:
        return {(): 1}


def _document_error(exc: yaml.YAMLError) -> DocumentError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return DocumentError(str(exc).splitlines()[0], mark.line + 1 if mark else 1)


def _int_or_text(text: str) -> Any:
    if not (text.lstrip("+-").isascii() and text.lstrip("+-").isdigit()) or len(text) > 4000:
        return text  # not plain decimal digits, or more than Python reads as an int
    return int(text, 10)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # JSON gives no positions here; the YAML pass (which does) names the line when it can.
            raise DocumentError("this key is given twice", 1, (key,))
        out[key] = value
    return out


def _check_bracket_depth(text: str) -> None:
    """JSON nesting deeper than MAX_DEPTH, refused before a recursive parser meets it."""
    depth, line, in_string, escaped = 0, 1, False, False
    for char in text:
        if char == "\n":
            line += 1
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise DocumentError(f"nested more than {MAX_DEPTH} levels deep", line)
        elif char in "]}":
            depth -= 1


def _check_yaml_depth(text: str) -> None:
    """YAML nesting deeper than MAX_DEPTH, found with the scanner (which does not recurse)."""
    depth = 0
    opening: tuple[type[yaml.Token], ...] = (
        yaml.BlockMappingStartToken,
        yaml.BlockSequenceStartToken,
        yaml.FlowMappingStartToken,
        yaml.FlowSequenceStartToken,
    )
    closing = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
    for token in yaml.scan(text, Loader=_TextNumberLoader):
        if isinstance(token, opening):
            depth += 1
            if depth > MAX_DEPTH:
                line = token.start_mark.line + 1
                raise DocumentError(f"nested more than {MAX_DEPTH} levels deep", line)
        elif isinstance(token, closing):
            depth -= 1


def _lines(root: yaml.Node | None) -> dict[Path, int]:
    """Each key path's line, walking aliases as the data will; refuses a key given twice, an
    alias inside its own anchor, and more than MAX_NODES values."""
    lines: dict[Path, int] = {}
    if root is None:
        return {(): 1}
    count = 0
    inside: set[int] = set()
    # An explicit stack, not recursion: the depth check above bounds nesting, this bounds work.
    stack: list[tuple[yaml.Node, Path, bool]] = [(root, (), False)]
    while stack:
        node, path, leaving = stack.pop()
        if leaving:
            inside.discard(id(node))
            continue
        line = node.start_mark.line + 1
        count += 1
        if count > MAX_NODES:
            raise DocumentError(
                f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)",
                line,
                path,
            )
        if id(node) in inside:
            raise DocumentError("an alias refers to a value that contains it", line, path)
        lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            inside.add(id(node))
            stack.append((node, path, True))
        if isinstance(node, yaml.MappingNode):
            children: list[tuple[yaml.Node, Path, bool]] = []
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise DocumentError("a key must be plain text", key_line, path)
                key = key_node.value
                if key == "<<":  # a merge key: its values land in this mapping
                    children.append((value_node, path, False))
                    continue
                if key in seen:
                    raise DocumentError("this key is given twice", key_line, (*path, key))
                seen.add(key)
                lines[(*path, key)] = key_line
                children.append((value_node, (*path, key), False))
            stack.extend(reversed(children))
        elif isinstance(node, yaml.SequenceNode):
            for index in range(len(node.value) - 1, -1, -1):
                stack.append((node.value[index], (*path, index), False))
    return lines


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
