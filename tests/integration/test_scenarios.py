"""Every example scenario and every scenario of the project's suite passes on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from punchcard.scenarios import files
from punchcard.scenarios.in_process import InProcess
from punchcard.scenarios.runner import Scenario, run

from ..conftest import EXAMPLES, ROOT

SCENARIOS = files.find_files([EXAMPLES / "scenarios", ROOT / "scenarios"])


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_passes(engine: sa.Engine, path: Path) -> None:
    result = run(files.load(path), InProcess(engine))
    assert result.passed, result.message


def test_the_suite_covers_at_least_25_stories() -> None:
    assert len([p for p in SCENARIOS if p.is_relative_to(ROOT)]) >= 25


PROGRAM = (ROOT / "src/punchcard/demo/burrito-rewards.yaml").read_text()
BURRITO = {"id": "l1", "sku": "BURR", "category": "burrito", "qty": 1, "unit_price": "9.50"}


@pytest.mark.parametrize(
    ("step", "told"),
    [
        ({"enroll": {"member": "bob", "att": "2026-03-03T10:00:00Z"}}, "unknown key att"),
        ({"close": {"order": "o1", "when": "now"}}, "unknown key when"),
        ({"void": {"ordr": "o1"}}, "unknown key ordr"),
        ({"redeem": {"member": "ann", "reward": "five-off", "alias": "r"}}, "unknown key alias"),
        ({"gift_card": {"redeem": "g1", "amount": "1.00", "partal": True}}, "unknown key partal"),
        ({"gift_card": {"capture": "h1", "partial": True}}, "unknown key partial"),
        ({"publish": {"programme": "x.yaml"}}, "unknown key programme"),
        ({"expect": {"member": "ann", "rewards": {"availble": []}}}, "rewards.availble is not"),
        ({"expect": {"member": "ann", "points": {"postd": 0}}}, "points.postd is not"),
        ({"expect": {"gift_card": "g1", "last": {"aproved": "1.00"}}}, "last.aproved is not"),
    ],
)
def test_a_typo_in_a_step_fails_the_scenario_naming_the_key(
    engine: sa.Engine, step: dict[str, object], told: str
) -> None:
    """A key a verb does not take would otherwise be ignored: a redeem meant to be partial
    would run whole, an expectation would check nothing, and the scenario would pass."""
    scenario = Scenario(
        path=ROOT / "scenarios" / "typo.yaml",
        name="typo",
        program=PROGRAM,
        start="2026-03-03T09:00:00-06:00",
        steps=[
            {"enroll": {"member": "ann"}},
            {"order": {"id": "o1", "member": "ann", "status": "open", "lines": [BURRITO]}},
            {"gift_card": {"issue": "g1", "amount": "5.00"}},
            step,
        ],
    )
    result = run(scenario, InProcess(engine))
    assert not result.passed
    assert result.message.startswith("step 4 (")
    assert told in result.message, result.message


def test_a_problem_in_an_inline_program_names_the_scenario_files_line(
    engine: sa.Engine, tmp_path: Path
) -> None:
    story = tmp_path / "inline.yaml"
    story.write_text(
        "scenario: inline programs with typos\n"
        "start: 2026-03-01T10:00:00-06:00\n"
        "program:\n"
        "  program: p\n"
        "  name: P\n"
        "  currency: USD\n"
        "  timezone: America/Chicago\n"
        "  earn: {points_per_unit: 10, roundng: ceil}\n"  # line 8
        "steps:\n"
        "  - enroll: {member: a}\n"
    )
    result = run(files.load(story), InProcess(engine))
    assert "program: line 8: earn.roundng: unknown key" in result.message, result.message
    fixed = story.read_text().replace("roundng", "rounding")
    story.write_text(
        fixed + "  - publish:\n"
        "      program: {program: p, name: P, currency: USD, timezone: America/Chicago,\n"
        "                earn: {points_per_unit: 10, rouding: ceil}}\n"  # line 13
    )
    result = run(files.load(story), InProcess(engine))
    assert "program: line 13: earn.rouding: unknown key" in result.message, result.message


def test_a_folder_run_takes_every_story_below_it_and_leaves_out_programs(tmp_path: Path) -> None:
    """By what a file holds, not where it lives: a story in a folder named `programs` runs,
    a program file beside the stories is not run as one."""
    (tmp_path / "programs").mkdir()
    (tmp_path / "common").mkdir()
    program = (ROOT / "src/punchcard/demo/burrito-rewards.yaml").read_text()
    (tmp_path / "common" / "burrito.yaml").write_text(program)
    story = "scenario: s\nprogram: ../common/burrito.yaml\nstart: 2026-03-01T10:00:00Z\nsteps: []\n"
    (tmp_path / "programs" / "a-story.yaml").write_text(story)
    (tmp_path / "broken.yaml").write_text("program: [")
    found = files.find_files([tmp_path])
    assert found == [tmp_path / "broken.yaml", tmp_path / "programs" / "a-story.yaml"]
