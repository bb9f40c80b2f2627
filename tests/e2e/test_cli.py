"""The `punchcard` command as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from punchcard.store.database import MIGRATIONS, create_engine, migrating

from ..conftest import EXAMPLE_PROGRAM, EXAMPLES, POSTGRES_URL
from .conftest import PUNCHCARD, free_port, stop


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PUNCHCARD, *args], capture_output=True, text=True, timeout=300, check=False, cwd=cwd
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it, not even a schema: what an operator starts from."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/punchcard.sqlite3"
        return
    if not POSTGRES_URL:
        pytest.skip("PUNCHCARD_TEST_POSTGRES_URL is not set")
    name = f"punchcard_empty_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _migrations() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def _versions(url: str) -> list[str]:
    """The rows of alembic_version: one, the newest migration, once migrated."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
    finally:
        engine.dispose()


def _shown(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def test_db_upgrade_takes_a_plain_path_and_the_other_commands_then_use_it(tmp_path: Path) -> None:
    head = _migrations().get_current_head()
    (tmp_path / "x").mkdir()
    for path in ("punchcard.sqlite3", "./x/y.sqlite3"):
        first = _run("db", "upgrade", "--database", path, cwd=tmp_path)
        assert (first.returncode, first.stdout, first.stderr) == (
            0,
            f"sqlite:///{path}: migrated from an empty database to {head}\n",
            "",
        )
        again = _run("db", "upgrade", "--database", path, cwd=tmp_path)
        assert again.stdout == f"sqlite:///{path}: already at migration {head}\n"
        made = _run("tenant", "create", "Alpha", "--json", "--database", path, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout).keys() == {"tenant", "sandbox_key", "live_key"}
        audit = _run("audit", "--database", path, cwd=tmp_path)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert re.fullmatch(r"\d+ passed, 0 failed", audit.stdout.splitlines()[-1])
    assert sorted(p.name for p in tmp_path.rglob("*.sqlite3")) == ["punchcard.sqlite3", "y.sqlite3"]


def test_worker_audit_and_writers_refuse_a_database_behind_the_newest_migration(
    empty_database: str, tmp_path: Path
) -> None:
    """Only `db upgrade` and `serve` migrate: the rest name the way out and change nothing."""
    head = _migrations().get_current_head()
    before = _migrations().get_revision(head).down_revision
    assert isinstance(before, str)
    shown = _shown(empty_database)
    if empty_database.startswith("sqlite"):
        Path(sa.make_url(empty_database).database or "").touch()  # an empty file
    commands = [
        ["worker"],
        ["audit"],
        ["tenant", "create", "Alpha"],
        ["key", "create", "--tenant", "t"],
        ["key", "revoke", "pk_live_x"],
        ["scenario", "run", str(EXAMPLES / "scenarios")],
        ["demo"],
    ]
    for args in commands:
        refused = _run(*args, "--database", empty_database)
        assert (refused.returncode, refused.stdout, refused.stderr) == (
            2,
            "",
            f"error: {shown} holds no Punchcard schema: run `punchcard db upgrade`\n",
        ), args
    engine = create_engine(empty_database)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with migrating(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, before)
    engine.dispose()
    for args in commands:
        refused = _run(*args, "--database", empty_database)
        assert (refused.returncode, refused.stdout, refused.stderr) == (
            2,
            "",
            f"error: {shown} is at migration {before}, not {head}: run `punchcard db upgrade`\n",
        ), args
    assert _versions(empty_database) == [before]
    upgraded = _run("db", "upgrade", "--database", empty_database)
    assert upgraded.stdout == f"{shown}: migrated from {before} to {head}\n"
    audit = _run("audit", "--database", empty_database)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_upgrades_racing_on_a_fresh_database_all_succeed_and_migrate_it_once(
    empty_database: str,
) -> None:
    """Three `punchcard db upgrade` at once: one migrates, the others wait for it (an advisory
    lock on PostgreSQL) and find the schema already at the newest migration."""
    head = _migrations().get_current_head()
    racers = [
        subprocess.Popen(
            [PUNCHCARD, "db", "upgrade", "--database", empty_database],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(*racer.communicate(timeout=120), racer.returncode) for racer in racers]
    shown = _shown(empty_database)
    assert sorted(results) == sorted(
        [
            (f"{shown}: migrated from an empty database to {head}\n", "", 0),
            (f"{shown}: already at migration {head}\n", "", 0),
            (f"{shown}: already at migration {head}\n", "", 0),
        ]
    )
    assert _versions(empty_database) == [head]


def test_servers_starting_together_on_a_fresh_database_both_serve(empty_database: str) -> None:
    """`serve` migrates on start under the same lock: two at once both come up."""
    ports = [free_port(), free_port()]
    servers = [
        subprocess.Popen(
            [PUNCHCARD, "serve", "--no-worker", "--database", empty_database, "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 90
        ready: set[int] = set()
        while ready != set(ports) and time.monotonic() < deadline:
            for port, server in zip(ports, servers, strict=True):
                assert server.poll() is None, server.stderr.read() if server.stderr else b""
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        ready.add(port)
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        assert ready == set(ports)
    finally:
        for server in servers:
            stop(server)
    assert _versions(empty_database) == [_migrations().get_current_head()]
