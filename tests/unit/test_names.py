"""The one rule for ids (names.py), as the services, the documents and the time reader apply it."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from punchcard import names
from punchcard.engine.documents import DocumentError, load_document
from punchcard.errors import InvalidInput
from punchcard.services.inputs import as_name, parse_time, read_time

REFUSED = {
    **{chr(c): "a control character" for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]},
    "\u2028": "a line or paragraph separator",
    "\u2029": "a line or paragraph separator",
    **{c: "an invisible character" for c in "\u200b\u200c\u200d\u2060\ufeff"},
    **{c: "a bidi control" for c in "\u061c\u200e\u200f"},
    **{chr(c): "a bidi control" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]},
    **{chr(c): "a lone surrogate" for c in (0xD800, 0xDBFF, 0xDC00, 0xDFFF)},
}


@pytest.mark.parametrize("char", list(REFUSED), ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_every_refused_character_is_named_wherever_it_stands(char: str) -> None:
    told = f"holds U+{ord(char):04X}, {REFUSED[char]}, which no id or name may hold"
    for text in (char, f"a{char}", f"{char}b", f"a{char}b"):
        assert names.problem(text) == told
    with pytest.raises(InvalidInput) as refused:
        as_name(f"m{char}1", "enroll.member")
    assert refused.value.message == f"enroll.member: {told}"


@given(st.text(st.characters(blacklist_characters=list(REFUSED), blacklist_categories=["Cs"])))
def test_text_without_them_is_an_id(text: str) -> None:
    """Letters of every script, emoji, spaces and punctuation are ids."""
    assert names.problem(text) is None


@given(
    st.text(
        st.characters(blacklist_characters=[*REFUSED, "/"], blacklist_categories=["Cs"]),
        min_size=1,
        max_size=50,
    )
)
def test_every_spelling_of_a_name_is_read_as_its_nfc(text: str) -> None:
    for spelling in ("NFC", "NFD"):
        written = unicodedata.normalize(spelling, text)
        assert as_name(written, "member") == unicodedata.normalize("NFC", text)


def test_nfd_and_nfc_are_one_name() -> None:
    assert as_name("jose\u0301", "member") == as_name("jos\u00e9", "member") == "jos\u00e9"
    assert names.normalised({"a": ["e\u0301", {"b": "e\u0301"}], "e\u0301": 1}) == {
        "a": ["\u00e9", {"b": "\u00e9"}],
        "e\u0301": 1,  # keys are field names, left as they are
    }


@pytest.mark.parametrize(
    ("written", "told"),
    [
        ("20260303", "'20260303' needs a UTC offset or Z, like 2026-03-03T12:30:00-06:00"),
        ("1700000000", "'1700000000' is not a time like 2026-03-03T12:30:00-06:00"),
        (1700000000, "1700000000 is not a time; write it like 2026-03-03T12:30:00-06:00"),
        (
            "2026-03-03T12:00:00",
            "'2026-03-03T12:00:00' needs a UTC offset or Z, like 2026-03-03T12:30:00-06:00",
        ),
    ],
)
def test_a_time_is_text_with_its_offset_never_digits_alone(written: object, told: str) -> None:
    with pytest.raises(ValueError) as refused:
        read_time(written)
    assert str(refused.value) == told
    with pytest.raises(InvalidInput) as in_process:
        parse_time(written, "order.at")
    assert in_process.value.message == f"order.at: {told}"


def test_a_time_with_its_offset_is_read() -> None:
    assert read_time("2026-03-03T12:30:00-06:00").isoformat() == "2026-03-03T12:30:00-06:00"
    assert read_time("2026-03-03T18:30:00Z").isoformat() == "2026-03-03T18:30:00+00:00"


@pytest.mark.parametrize(
    ("text", "line", "path"),
    [
        ('{"rewards": [{"id": "a\\ud800"}]}', 1, ("rewards", 0, "id")),
        ('rewards:\n  - id: "a\\ud800"\n', 2, ("rewards", 0, "id")),
    ],
    ids=["json", "yaml"],
)
def test_a_lone_surrogate_in_a_document_is_refused_by_line_and_path(
    text: str, line: int, path: tuple[object, ...]
) -> None:
    """A JSON or YAML escape makes one; no column or answer can hold it."""
    with pytest.raises(DocumentError) as refused:
        load_document(text)
    assert (refused.value.message, refused.value.line, refused.value.path) == (
        "a lone surrogate is not text",
        line,
        path,
    )


def test_a_lone_surrogate_in_a_key_is_refused_by_its_line_and_the_path_that_holds_it() -> None:
    """The key itself is left out of the path: it could not be printed."""
    with pytest.raises(DocumentError) as refused:
        load_document('program: p\nearn:\n  "k\\udc00": 1\n')
    assert (refused.value.message, refused.value.line, refused.value.path) == (
        "a key holds a lone surrogate, which is not text",
        3,
        ("earn",),
    )


def test_a_document_is_read_in_nfc() -> None:
    """A program's skus and a scenario's ids have one spelling, as the API reads them."""
    data, _ = load_document('skus: ["cafe\\u0301", "CAF\u0045\u0301"]\nname: "jose\u0301"\n')
    assert data == {"skus": ["caf\u00e9", "CAF\u00c9"], "name": "jos\u00e9"}
    data, _ = load_document('{"skus": ["cafe\\u0301"]}')
    assert data == {"skus": ["caf\u00e9"]}
