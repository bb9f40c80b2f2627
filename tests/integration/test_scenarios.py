"""Every example scenario and every scenario of the project's suite passes on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from punchcard.scenarios import files
from punchcard.scenarios.in_process import InProcess
from punchcard.scenarios.runner import run

from ..conftest import EXAMPLES, ROOT

SCENARIOS = files.find_files([EXAMPLES / "scenarios", ROOT / "scenarios"])


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_passes(engine: sa.Engine, path: Path) -> None:
    result = run(files.load(path), InProcess(engine))
    assert result.passed, result.message


def test_the_suite_covers_at_least_25_stories() -> None:
    assert len([p for p in SCENARIOS if p.is_relative_to(ROOT)]) >= 25
