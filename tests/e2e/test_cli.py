"""The `punchcard` command as a user runs it: real processes, real files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ..conftest import EXAMPLE_PROGRAM, EXAMPLES

PUNCHCARD = str(Path(sys.executable).parent / "punchcard")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PUNCHCARD, *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_scenario_run_on_the_examples_prints_three_passed() -> None:
    result = _run("scenario", "run", str(EXAMPLES / "scenarios"))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "3 passed, 0 failed"
    assert sum(line.startswith("PASS ") for line in lines) == 3


def test_a_failed_expectation_names_step_key_wanted_and_seen(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE_PROGRAM, tmp_path / "program.yaml")
    (tmp_path / "wrong.yaml").write_text(
        "scenario: A wrong expectation\n"
        "program: program.yaml\n"
        "start: 2026-03-03T09:00:00-06:00\n"
        "steps:\n"
        "  - enroll: {member: ann}\n"
        "  - order: {id: o1, member: ann, lines: [{id: l1, sku: T, category: taco, qty: 1, unit_price: '3.00'}]}\n"
        "  - expect: {member: ann, points: {posted: 31}}\n"
    )
    result = _run("scenario", "run", str(tmp_path / "wrong.yaml"))
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == [  # one line per scenario, then the count
        "FAIL wrong.yaml: A wrong expectation -- step 3 (expect): points.posted: wanted 31,"
        " seen 30",
        "0 passed, 1 failed",
    ]


def test_a_run_that_finds_no_scenario_fails_and_says_so(tmp_path: Path) -> None:
    result = _run("scenario", "run", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == ["0 passed, 0 failed"]
    assert result.stderr.strip() == f"no scenario files found under {tmp_path}"


def test_program_check_prints_each_problem_with_file_line_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE_PROGRAM.read_text().replace("rounding: floor", "roundng: floor"))
    result = _run("program", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:8: earn.roundng: unknown key (a typo? extensions begin with x-)" in result.stdout


def test_program_check_summarises_a_good_program() -> None:
    result = _run("program", "check", str(EXAMPLE_PROGRAM))
    assert result.returncode == 0
    assert "Burrito Rewards (burrito-rewards)" in result.stdout
    assert "punch card tenth-visit" in result.stdout


def test_diagram_prints_mermaid_from_the_transition_table() -> None:
    result = _run("diagram", "tier", "--program", str(EXAMPLE_PROGRAM))
    assert result.returncode == 0
    assert result.stdout.startswith("stateDiagram-v2\n    [*] --> member\n")
    assert "member --> gold: points reach 1000 points" in result.stdout


def test_demo_prints_balances_and_an_explanation() -> None:
    result = _run("demo")
    assert result.returncode == 0, result.stderr
    assert "Gift card g1 balance: 16.25" in result.stdout
    assert "Base: 22.21 x 10 points = 222." in result.stdout
    assert "1366" in result.stdout  # bob: 1866 earned, 500 spent on five-off
