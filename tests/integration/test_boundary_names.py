"""Ids in scenario files are held to the rule of ids at the API (names.py), on both databases:
a bidi override or a zero-width character is invalid_input, and the NFC and NFD spellings
of an id are one member."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from punchcard.scenarios import files
from punchcard.scenarios.in_process import InProcess
from punchcard.scenarios.runner import run

from ..conftest import ROOT

PROGRAM = ROOT / "src/punchcard/demo/burrito-rewards.yaml"
BURRITO = '{id: l1, sku: BURR, category: burrito, qty: 1, unit_price: "9.50"}'


def test_ids_in_a_scenario_file_follow_the_api_rule(engine: sa.Engine, tmp_path: Path) -> None:
    story = tmp_path / "names.yaml"
    story.write_text(
        "scenario: one spelling per name, and no hidden characters\n"
        f"program: {PROGRAM}\n"
        "start: 2026-03-03T09:00:00Z\n"
        "steps:\n"
        '  - enroll: {member: "jose\\u0301"}\n'  # NFD, as a YAML escape
        '  - enroll: {member: "jos\u00e9"}\n'  # NFC, written as is: the same member
        "    error: invalid_state\n"
        '  - enroll: {member: "evil\\u202egpj"}\n'
        "    error: invalid_input\n"
        '  - enroll: {member: "a\\u200bb"}\n'
        "    error: invalid_input\n"
        f'  - order: {{id: "o\\u0301", member: "jos\u00e9", lines: [{BURRITO}]}}\n'
        '  - gift_card: {issue: "g\\u2066", amount: "5.00"}\n'
        "    error: invalid_input\n"
        '  - expect: {member: "jose\\u0301", visits: 1}\n'
    )
    result = run(files.load(story), InProcess(engine))
    assert result.passed, result.message
