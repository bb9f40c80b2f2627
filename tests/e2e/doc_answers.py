"""Reading a doc page's fenced blocks and holding a command's answer to the one the page shows.

The conventions are those docs/api.md states at its top: after a command, `#` lines starting
`# {` or `# [` are its answer; a `json` block right after a `sh` block is the answer of the
block's last command. In an answer, `"..."` is any value, `"abc..."` any string beginning
`abc`, and a bare `...` in an object stands for keys left out. A command shown without an
answer prints nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ANY = "..."
ABRIDGED = "\x00abridged"  # the member a bare `...` becomes; no real key holds a NUL


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    first: int  # the line number of its opening fence
    last: int  # the line number of its closing fence


@dataclass(frozen=True)
class Segment:
    """Code up to a shown answer (or the end of its block), and that answer, if any."""

    code: str
    line: int  # where its code starts in the page
    answer: str | None


def blocks(page: str) -> list[Block]:
    found: list[Block] = []
    lines = page.splitlines()
    index = 0
    while index < len(lines):
        opening = re.fullmatch(r"```(\S*)\s*", lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while lines[end].strip() != "```":
            end += 1
        found.append(Block(opening[1], "\n".join(lines[index + 1 : end]), index + 1, end + 1))
        index = end + 1
    return found


def segments(page: str) -> list[Segment]:
    """Every `sh` block of the page cut into its commands' segments, in page order."""
    found: list[Segment] = []
    all_blocks = blocks(page)
    for at, block in enumerate(all_blocks):
        if block.lang != "sh":
            continue
        after = all_blocks[at + 1] if at + 1 < len(all_blocks) else None
        shown = (
            after.text if after and after.lang == "json" and after.first == block.last + 1 else None
        )
        code: list[str] = []
        answer: list[str] = []
        start = block.first + 1
        for number, line in enumerate(block.text.splitlines(), start=block.first + 1):
            if answer and not line.startswith("#"):
                found.append(Segment("\n".join(code), start, "\n".join(answer)))
                code, answer, start = [], [], number
            if answer or re.match(r"# [{\[]", line):
                answer.append(line[1:])
            else:
                code.append(line)
        if answer:
            found.append(Segment("\n".join(code), start, "\n".join(answer)))
            code = []
        if any(line.strip() for line in code):
            found.append(Segment("\n".join(code), start, shown))
        else:
            assert shown is None, f"line {block.last + 1}: a json block follows no command"
    return found


def parse(answer: str) -> Any:
    """The shown answer as JSON, each bare `...` (outside strings) an ABRIDGED member."""
    out: list[str] = []
    in_string = escaped = False
    index = 0
    while index < len(answer):
        char = answer[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif answer.startswith("...", index):
            out.append(json.dumps(ABRIDGED) + ": null")
            index += 3
            continue
        out.append(char)
        index += 1
    return json.loads("".join(out))


def differences(shown: Any, seen: Any, path: str = "$") -> list[str]:
    """Where `seen` is not what `shown` says; empty when it is."""
    if shown == ANY:
        return []
    if isinstance(shown, str) and shown.endswith(ANY):
        if isinstance(seen, str) and seen.startswith(shown[: -len(ANY)]):
            return []
        return [f"{path}: shown {shown!r}, seen {seen!r}"]
    if isinstance(shown, dict) and isinstance(seen, dict):
        keys = set(shown) - {ABRIDGED}
        found = [f"{path}.{key}: shown, not seen" for key in sorted(keys - set(seen))]
        if ABRIDGED not in shown:
            found += [f"{path}.{key}: seen, not shown" for key in sorted(set(seen) - keys)]
        for key in sorted(keys & set(seen)):
            found += differences(shown[key], seen[key], f"{path}.{key}")
        return found
    if isinstance(shown, list) and isinstance(seen, list) and len(shown) == len(seen):
        return [
            diff
            for index, (one, other) in enumerate(zip(shown, seen, strict=True))
            for diff in differences(one, other, f"{path}[{index}]")
        ]
    if type(shown) is type(seen) and shown == seen:
        return []
    return [f"{path}: shown {json.dumps(shown)}, seen {json.dumps(seen)}"]


def text_matches(shown: str, seen: str) -> bool:
    """Lines of text alike, each `...` in a shown line standing for any text."""
    shown_lines, seen_lines = shown.splitlines(), seen.splitlines()
    return len(shown_lines) == len(seen_lines) and all(
        re.fullmatch(".+".join(map(re.escape, one.split(ANY))), other)
        for one, other in zip(shown_lines, seen_lines, strict=True)
    )
