"""The program parser, fuzzed: whatever text it is given, it answers a Program or a
ProgramError whose every problem names a line and a key path, and nothing else escapes.

Inputs: random text; random YAML and JSON documents; the demo program with a key deleted,
a value replaced (wrong types, huge and odd numbers, deep nesting, unicode), an unknown
key added, a line repeated (duplicate keys), text spliced in, and alias bombs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from punchcard.engine.documents import MAX_DEPTH, load_document, plain
from punchcard.engine.programs import ProgramError, parse_program

DEMO_TEXT = (
    Path(__file__).resolve().parents[2] / "src/punchcard/demo/burrito-rewards.yaml"
).read_text()
DEMO = plain(load_document(DEMO_TEXT)[0])
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _holds(text: str) -> None:
    """The parser's promise: a program, or problems that each name a line and a path."""
    try:
        parse_program(text)
    except ProgramError as error:
        assert error.problems
        for problem in error.problems:
            assert isinstance(problem.line, int), str(problem)
            assert problem.line >= 1, str(problem)
            assert problem.path, str(problem)
            assert str(problem).startswith(f"line {problem.line}: {problem.path}: ")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["1e999", "NaN", "-inf", "0x1F", "1_000", "12:30", "9" * 5000, "-0", "1.005", ""]
    ),
    st.text(max_size=20),
    st.sampled_from(["𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "‮rtl", "nul\x00byte", "ゼロ", "\ufeffbom", "a\u0301"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(DEMO)[1:]


def _set(data: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    copy = json.loads(json.dumps(data))
    parent = copy
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


def _dump(data: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(data, default=str, ensure_ascii=False)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@FUZZ
@given(st.text())
def test_random_text_is_a_program_or_problems_with_lines(text: str) -> None:
    _holds(text)


@FUZZ
@given(values, st.booleans())
def test_random_documents_are_a_program_or_problems_with_lines(data: Any, as_json: bool) -> None:
    _holds(_dump(data, as_json))


@FUZZ
@given(st.sampled_from(PATHS), values, st.booleans(), st.booleans())
def test_the_demo_with_a_value_replaced_or_deleted_says_where(
    path: tuple[Any, ...], value: Any, delete: bool, as_json: bool
) -> None:
    _holds(_dump(_set(DEMO, path, value, delete=delete), as_json))


@FUZZ
@given(st.sampled_from(PATHS), st.text(min_size=1, max_size=10), values, st.booleans())
def test_the_demo_with_an_unknown_key_says_where(
    path: tuple[Any, ...], key: str, value: Any, as_json: bool
) -> None:
    data = json.loads(json.dumps(DEMO))
    target = data
    for part in path[:-1]:
        target = target[part]
    if isinstance(target, dict):
        target[key] = value
    _holds(_dump(data, as_json))


@FUZZ
@given(st.data())
def test_the_demo_text_spliced_or_with_a_line_repeated_says_where(data: st.DataObject) -> None:
    lines = DEMO_TEXT.splitlines(keepends=True)
    where = data.draw(st.integers(0, len(lines) - 1))
    how = data.draw(st.sampled_from(["repeat", "delete", "splice", "cut"]))
    if how == "repeat":  # a key given twice
        lines.insert(where, lines[where])
    elif how == "delete":
        del lines[where]
    elif how == "splice":
        lines.insert(where, data.draw(st.text(max_size=30)) + "\n")
    else:
        text = "".join(lines)
        cut = data.draw(st.integers(0, len(text)))
        lines = [text[:cut] + data.draw(st.text(max_size=5)) + text[cut + 1 :]]
    _holds("".join(lines))


def _problems(text: str) -> list[str]:
    with pytest.raises(ProgramError) as caught:
        parse_program(text)
    for problem in caught.value.problems:
        assert problem.line is not None
    return [str(p) for p in caught.value.problems]


def test_a_billion_laughs_is_refused_quickly_with_its_line() -> None:
    bomb = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    started = time.monotonic()
    problems = _problems(DEMO_TEXT + "x-bomb:\n" + "\n".join("  " + b for b in bomb) + "\n")
    assert time.monotonic() - started < 5
    assert "alias bomb" in problems[0]


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    assert "contains it" in _problems(DEMO_TEXT + "x-loop: &loop [1, *loop]\n")[0]


@pytest.mark.parametrize("opener", ["[", '{"a": ', "- "])
def test_deep_nesting_is_refused_with_its_line(opener: str) -> None:
    deep = opener * 100_000
    problems = _problems(deep)
    assert f"nested more than {MAX_DEPTH} levels deep" in problems[0]


def test_deep_yaml_block_nesting_is_refused_with_its_line() -> None:
    text = "".join(f"{'  ' * n}k{n}:\n" for n in range(200)) + f"{'  ' * 200}leaf: 1\n"
    assert problems_line(text) == MAX_DEPTH + 1


def problems_line(text: str) -> int | None:
    with pytest.raises(ProgramError) as caught:
        parse_program(text)
    return caught.value.problems[0].line


def test_a_key_given_twice_is_an_error_on_its_second_line() -> None:
    text = DEMO_TEXT.replace("name: Burrito Rewards\n", "name: Burrito Rewards\nname: Other\n")
    assert _problems(text) == ["line 3: name: this key is given twice"]


def test_a_key_given_twice_in_json_names_its_line() -> None:
    text = json.dumps(DEMO, indent=1).replace('"name": ', '"name": "x",\n "name": ', 1)
    problems = _problems(text)
    assert problems == ["line 4: name: this key is given twice"]  # the second "name"


def test_json_problems_name_lines() -> None:
    data = json.loads(json.dumps(DEMO))
    data["earn"]["roundng"] = "floor"
    text = json.dumps(data, indent=2)
    expected = next(i for i, line in enumerate(text.splitlines(), 1) if "roundng" in line)
    assert _problems(text) == [
        f"line {expected}: earn.roundng: unknown key (a typo? extensions begin with x-)"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("accrual_delay", "P99999999999D"),
        ("points_per_unit", "1" + "0" * 5000),
        ("points_per_unit", 10**30),
    ],
)
def test_huge_numbers_are_problems_not_crashes(key: str, value: Any) -> None:
    data = _set(DEMO, ("earn", key), value)
    _problems(yaml.safe_dump(data))
    _problems(json.dumps(data))
