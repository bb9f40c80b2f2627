"""What an id may hold: one rule for the API, the services, inbound events and documents.

Ids travel in URL paths, logs, webhook payloads and on people's screens. A character that
is not seen (a zero-width space, a control) lets two ids look alike, and a bidi override
(U+202E) shows the text after it reversed, so one id shows as another. Neither is part of
a real id, so both are refused. And a name has one spelling: `é` typed as one character
(NFC) or as `e` and a combining accent (NFD) is one member, so ids are read in NFC.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_KINDS: tuple[tuple[range, str], ...] = (
    (range(0x00, 0x20), "a control character"),
    (range(0x7F, 0xA0), "a control character"),  # DEL and the C1 controls
    (range(0x2028, 0x202A), "a line or paragraph separator"),
    (range(0x200B, 0x200E), "an invisible character"),  # zero-width space, (non-)joiner
    (range(0x2060, 0x2061), "an invisible character"),  # word joiner
    (range(0xFEFF, 0xFF00), "an invisible character"),  # zero-width no-break space (BOM)
    (range(0x061C, 0x061D), "a bidi control"),  # Arabic letter mark
    (range(0x200E, 0x2010), "a bidi control"),  # left-to-right and right-to-left marks
    (range(0x202A, 0x202F), "a bidi control"),  # embeddings and overrides
    (range(0x2066, 0x206A), "a bidi control"),  # isolates
    (range(0xD800, 0xE000), "a lone surrogate"),
)
_REFUSED = re.compile(
    "[" + "".join(f"\\u{r.start:04x}-\\u{r.stop - 1:04x}" for r, _ in _KINDS) + "]"
)


def problem(text: str) -> str | None:
    """What makes `text` no id: its first control, invisible or bidi character, named by its
    code point (the character itself would not show). None if it holds none."""
    found = _REFUSED.search(text)
    if found is None:
        return None
    code = ord(found.group())
    kind = next(kind for codes, kind in _KINDS if code in codes)
    return f"holds U+{code:04X}, {kind}, which no id or name may hold"


def normal(text: str) -> str:
    """The one spelling of a name: Unicode NFC."""
    return unicodedata.normalize("NFC", text)


def normalised(value: Any) -> Any:
    """A JSON value with every text in it in NFC, changed in place
    (keys are left as they are: they are field names). Walks with a stack, not recursion,
    so no nesting a parser took can make it fail."""
    if isinstance(value, str):
        return normal(value)
    stack = [value]
    while stack:
        item = stack.pop()
        pairs = (
            item.items()
            if isinstance(item, dict)
            else enumerate(item)
            if isinstance(item, list)
            else ()
        )
        for key, child in list(pairs):
            if isinstance(child, str):
                item[key] = normal(child)
            elif isinstance(child, dict | list):
                stack.append(child)
    return value
