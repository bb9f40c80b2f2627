"""The `punchcard` command: scenario run, program check, diagram, demo."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from punchcard.engine.money import format_money
from punchcard.engine.programs import Program, ProgramError, parse_program
from punchcard.lifecycle.machines import diagram as render_diagram
from punchcard.scenarios import files
from punchcard.scenarios.in_process import InProcess
from punchcard.scenarios.runner import run as run_scenario
from punchcard.store.database import open_database

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
scenario_app = typer.Typer(
    no_args_is_help=True, help="Run loyalty stories written as scenario files."
)
program_app = typer.Typer(no_args_is_help=True, help="Work with program definition files.")
app.add_typer(scenario_app, name="scenario")
app.add_typer(program_app, name="program")
console = Console(highlight=False, soft_wrap=True)

DEMO_PROGRAM = Path(__file__).parent / "demo" / "burrito-rewards.yaml"


@scenario_app.command("run")
def scenario_run(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files or folders of them.")],
    database: Annotated[
        str | None, typer.Option(help="Database URL; default: a temporary SQLite file.")
    ] = None,
) -> None:
    """Run each scenario; print a line each and `N passed, M failed`."""
    with tempfile.TemporaryDirectory(prefix="punchcard-") as tmp:
        engine = open_database(database or f"sqlite:///{tmp}/scenarios.sqlite3")
        target = InProcess(engine)
        passed = failed = 0
        found = files.find_files(paths)
        with Progress(console=console, transient=True, disable=len(found) < 10) as progress:
            task = progress.add_task("scenarios", total=len(found))
            for path in found:
                try:
                    result = run_scenario(files.load(path), target)
                    ok, name, message = result.passed, result.scenario.name, result.message
                except files.ScenarioFileError as exc:
                    ok, name, message = False, str(path), str(exc)
                if ok:
                    passed += 1
                    progress.console.print(f"[green]PASS[/] {path.name}: {name}")
                else:
                    failed += 1
                    progress.console.print(f"[red]FAIL[/] {path.name}: {name}\n     {message}")
                progress.advance(task)
        engine.dispose()
    print(f"{passed} passed, {failed} failed")
    if failed or not passed:
        raise typer.Exit(1)


@program_app.command("check")
def program_check(
    file: Annotated[Path, typer.Argument(help="A program YAML or JSON file.")],
) -> None:
    """Print the problems of a program file, or a one-screen summary of it."""
    try:
        program = parse_program(file.read_text())
    except ProgramError as exc:
        for problem in exc.problems:
            where = f"{file}:{problem.line}" if problem.line else str(file)
            console.print(f"[red]{where}[/]: {problem.path}: {problem.message}")
        raise typer.Exit(1) from exc
    console.print(summary(program))


def summary(program: Program) -> Table:
    table = Table(title=f"{program.name} ({program.program})", show_header=False)
    earn = program.earn
    excluded = sorted(earn.exclude.categories | earn.exclude.skus) or ["nothing"]
    table.add_row("currency, timezone", f"{program.currency}, {program.timezone}")
    table.add_row(
        "earn",
        f"{earn.points_per_unit} points per 1 {program.currency}, rounding {earn.rounding}, "
        f"excluding {', '.join(excluded)}; posts {earn.accrual_delay} after close; "
        f"negative balance: {earn.negative_balance}",
    )
    expiry = program.expiry
    table.add_row(
        "expiry",
        "never"
        if expiry is None
        else f"{expiry.months_after_earn} months after earning"
        if expiry.months_after_earn
        else f"after {expiry.inactivity_days} days without activity",
    )
    tiers = program.tiers
    table.add_row(
        f"tiers ({tiers.metric}, {tiers.window})",
        ", ".join(f"{lv.id} {lv.threshold}+ x{lv.multiplier}" for lv in tiers.levels),
    )
    visits = program.visits
    table.add_row(
        "visits",
        f"spend {format_money(visits.min_spend)}+, at most {visits.max_per_day or 'any number'} a day",
    )
    for card in program.punch_cards:
        table.add_row(f"punch card {card.id}", f"{card.goal} visits -> {card.reward}")
    for bonus in program.item_bonuses:
        match = sorted(bonus.match.skus | bonus.match.categories)
        table.add_row(
            f"item bonus {bonus.id}", f"{bonus.points_per_unit} per unit of {', '.join(match)}"
        )
    for promo in program.promotions:
        what = f"x{promo.multiplier}" if promo.multiplier else f"+{promo.bonus_points} points"
        table.add_row(f"promotion {promo.id}", f"{what}, {promo.starts} to {promo.ends}")
    for reward in program.rewards:
        cost = f"{reward.cost} points" if reward.cost else "earned only"
        table.add_row(f"reward {reward.id}", f"{cost}, valid {reward.valid_days} days")
    return table


@app.command()
def diagram(
    name: Annotated[str, typer.Argument(help="order, reward, hold, points_lot or tier")],
    program: Annotated[Path | None, typer.Option(help="The program whose tiers to draw.")] = None,
) -> None:
    """Print a lifecycle's state diagram as Mermaid text, drawn from its transition table."""
    parsed = parse_program(program.read_text()) if program else None
    try:
        print(render_diagram(name, parsed))
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc


@app.command()
def demo(
    database: Annotated[
        str | None, typer.Option(help="Database URL; default: a temporary SQLite file.")
    ] = None,
) -> None:
    """Load the example program, run a small story, print balances and one order's explanation."""
    from punchcard.demo.story import run_demo

    with tempfile.TemporaryDirectory(prefix="punchcard-demo-") as tmp:
        engine = open_database(database or f"sqlite:///{tmp}/demo.sqlite3")
        run_demo(engine, DEMO_PROGRAM.read_text(), console, datetime(2026, 3, 3, 15, 0, tzinfo=UTC))
        engine.dispose()
