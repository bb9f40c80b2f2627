"""A user's mistakes at the `punchcard` command: one line naming the problem on stderr, exit
code 2, no traceback, and nothing made or changed (docs/operations.md)."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from punchcard.store.database import MIGRATIONS

from ..conftest import EXAMPLE_PROGRAM, EXAMPLES
from .conftest import PUNCHCARD, free_port

SCENARIOS = str(EXAMPLES / "scenarios")


def _mistake(*args: str, cwd: Path | None = None) -> str:
    """The one line a mistaken command prints, after checking it exits 2 with no traceback."""
    done = subprocess.run(
        [PUNCHCARD, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
    assert "Traceback" not in done.stderr + done.stdout
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_missing_program_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert _mistake("program", "check", str(missing)) == f"error: no file {missing}"
    assert (
        _mistake("program", "check", str(tmp_path)) == f"error: {tmp_path} is a folder, not a file"
    )
    assert _mistake("diagram", "tier", "--program", str(missing)) == f"error: no file {missing}"


def test_a_diagram_of_a_bad_program_or_an_unknown_lifecycle_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE_PROGRAM.read_text().replace("rounding: floor", "roundng: floor"))
    assert _mistake("diagram", "tier", "--program", str(bad)) == (
        f"error: {bad}:8: earn.roundng: unknown key (a typo? extensions begin with x-)"
    )
    assert _mistake("diagram", "bogus") == (
        "error: no diagram 'bogus': choose from order, reward, hold, points_lot, tier"
    )


def test_missing_scenario_paths_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    url = f"http://127.0.0.1:{free_port()}"
    assert _mistake(
        "parity", SCENARIOS, str(missing), "--a", url, "--a-key", "k", "--b", url, "--b-key", "k"
    ) == (f"error: no file or folder {missing}")
    assert _mistake("scenario", "run", str(missing)) == f"error: no file or folder {missing}"
    assert _mistake("scenario", "run", "--jobs", "2", SCENARIOS) == (
        "error: --jobs needs --target: in process, scenarios share one database session"
    )


def test_a_server_that_does_not_answer_is_named_before_anything_runs() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    refused = f"error: can not reach {url}: [Errno 111] Connection refused"
    assert _mistake("scenario", "run", SCENARIOS, "--target", url, "--api-key", "k") == refused
    assert (
        _mistake("parity", SCENARIOS, "--a", url, "--a-key", "k", "--b", url, "--b-key", "k")
        == refused
    )


@pytest.mark.parametrize(
    "command",
    [
        ["audit"],
        ["worker"],
        ["tenant", "create", "Alpha"],
        ["key", "create", "--tenant", "t"],
        ["scenario", "run", SCENARIOS],
        ["demo"],
    ],
)
def test_a_database_that_is_not_there_is_named_and_not_made(
    tmp_path: Path, command: list[str]
) -> None:
    """Only `db upgrade` and `serve` make a database; the others name the one they wanted."""
    assert _mistake(*command, "--database", "punchcard.sqlite3", cwd=tmp_path) == (
        "error: no database at punchcard.sqlite3"
        " (`punchcard db upgrade --database punchcard.sqlite3` makes one)"
    )
    assert _mistake(*command, "--database", "./x/y.sqlite3", cwd=tmp_path) == (
        "error: no database at x/y.sqlite3"
        " (`punchcard db upgrade --database ./x/y.sqlite3` makes one)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve", "--port", "0"]])
def test_a_sqlite_file_in_a_missing_folder_is_named_and_not_made(
    tmp_path: Path, command: list[str]
) -> None:
    assert _mistake(*command, "--database", "x/y.sqlite3", cwd=tmp_path) == (
        "error: no folder x for the SQLite file x/y.sqlite3"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [["db", "upgrade"], ["serve", "--port", "0"], ["audit"], ["worker"], ["tenant", "create", "A"]],
)
def test_an_unreachable_postgresql_is_named_without_its_password(command: list[str]) -> None:
    port = free_port()  # closed: nothing listens there
    assert _mistake(
        *command, "--database", f"postgresql://punch:secret@127.0.0.1:{port}/punchcard"
    ) == (
        f"error: can not open postgresql+psycopg://punch:***@127.0.0.1:{port}/punchcard:"
        f' connection failed: connection to server at "127.0.0.1", port {port} failed:'
        " Connection refused"
    )


def test_what_is_not_a_database_is_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    assert _mistake("audit", "--database", str(text)) == (
        f"error: can not open sqlite:///{text}: file is not a database"
    )
    assert _mistake("audit", "--database", "mysql://u@h/db") == (
        "error: mysql://u@h/db: Punchcard runs on SQLite (sqlite:///FILE)"
        " or PostgreSQL (postgresql+psycopg://user@host/db)"
    )


def test_serve_refuses_a_port_in_use_and_a_log_level_it_does_not_know(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _mistake("serve", "--port", str(port), "--database", "p.sqlite3", cwd=tmp_path) == (
            f"error: can not listen on 127.0.0.1:{port}: Address already in use"
        )
    assert list(tmp_path.iterdir()) == []  # refused before the database was made
    assert _mistake("serve", "--log-level", "loud", "--port", "0", cwd=tmp_path) == (
        "error: --log-level 'loud': choose from debug, info, warning, error"
    )
    assert _mistake("worker", "--log-level", "loud", cwd=tmp_path) == (
        "error: --log-level 'loud': choose from debug, info, warning, error"
    )


def test_a_tenant_or_key_the_database_refuses_is_named(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/p.sqlite3"
    subprocess.run(
        [PUNCHCARD, "db", "upgrade", "--database", database], check=True, capture_output=True
    )
    assert _mistake("tenant", "create", " ", "--database", database) == (
        "error: invalid_input: a tenant needs a name"
    )
    assert _mistake("key", "create", "--tenant", "nobody", "--database", database) == (
        "error: not_found: tenant has no environment 'sandbox'"
    )


def test_generate_names_a_bad_start_and_a_folder_it_can_not_write(tmp_path: Path) -> None:
    assert _mistake("generate", str(tmp_path / "out"), "--start", "soon") == (
        "error: --start: soon is not a date like 2026-03-02"
    )
    taken = tmp_path / "file"
    taken.write_text("")
    assert _mistake("generate", str(taken), "--orders", "3") == (
        f"error: can not write to {taken}: File exists"
    )


def test_a_database_migrated_by_a_newer_punchcard_is_refused_by_every_command(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path}/p.sqlite3"
    subprocess.run(
        [PUNCHCARD, "db", "upgrade", "--database", database], check=True, capture_output=True
    )
    with sqlite3.connect(tmp_path / "p.sqlite3") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    for command in (["db", "upgrade"], ["serve", "--port", "0"], ["audit"], ["worker"]):
        assert _mistake(*command, "--database", database) == (
            f"error: {database} is at migration 9999, which this Punchcard ({head}) does not"
            " have: run a newer Punchcard"
        )
