"""The `punchcard` command: serve, worker, db upgrade, audit, tenants and keys, scenarios,
programs, diagrams, the demo and synthetic traffic.

A user's mistake (a missing file, a database that is unreachable or not migrated, a server
that does not answer) is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from punchcard.engine.money import format_money
from punchcard.engine.programs import Program, ProgramError, parse_program
from punchcard.lifecycle.machines import diagram as render_diagram
from punchcard.scenarios import files
from punchcard.scenarios.in_process import InProcess
from punchcard.scenarios.runner import run as run_scenario
from punchcard.store.database import (
    DatabaseProblem,
    connect,
    head,
    migrate,
    open_database,
    require_head,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
scenario_app = typer.Typer(
    no_args_is_help=True, help="Run loyalty stories written as scenario files."
)
program_app = typer.Typer(no_args_is_help=True, help="Work with program definition files.")
app.add_typer(scenario_app, name="scenario")
app.add_typer(program_app, name="program")
console = Console(highlight=False, soft_wrap=True)

DEMO_PROGRAM = Path(__file__).parent / "demo" / "burrito-rewards.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")


def fail(message: str) -> NoReturn:
    """A user's mistake: one line naming it on stderr, exit code 2, no traceback."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    raise typer.Exit(2)


def read_file(path: Path) -> str:
    """A file's text, or the one-line reason it can not be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"no file {path}")
    except IsADirectoryError:
        fail(f"{path} is a folder, not a file")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text")
    except OSError as exc:
        fail(f"can not read {path}: {exc.strerror or exc}")


def existing(paths: list[Path]) -> list[Path]:
    """The scenario files under `paths`, after checking each path names something."""
    for path in paths:
        if not path.exists():
            fail(f"no file or folder {path}")
    return files.find_files(paths)


def database_at_head(database: str) -> sa.Engine:
    """The database, if it exists and is at the newest migration: only `db upgrade` and
    `serve` migrate, so nothing else ever runs against a schema it was not written for."""
    try:
        engine = connect(database)
        require_head(engine)
    except DatabaseProblem as exc:
        fail(str(exc))
    return engine


def migrated(database: str) -> tuple[sa.Engine, str | None]:
    """The database (a SQLite file is made if missing) brought to the newest migration,
    with the revision it was at before (None: it held no schema)."""
    try:
        engine = connect(database, create=True)
        return engine, migrate(engine)
    except DatabaseProblem as exc:
        fail(str(exc))


def reachable(url: str) -> None:
    """Refuse a server that does not answer at all, before running anything against it."""
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/readyz", timeout=10)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        fail(f"can not reach {url}: {exc or type(exc).__name__}")


def log_level_of(level: str) -> str:
    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level {level!r}: choose from {', '.join(LOG_LEVELS)}")
    return level


@scenario_app.command("run")
def scenario_run(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files or folders of them.")],
    database: Annotated[
        str | None, typer.Option(help="Database URL; default: a temporary SQLite file.")
    ] = None,
    target_url: Annotated[
        str | None, typer.Option("--target", help="Run over HTTP against this server instead.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="PUNCHCARD_API_KEY", help="With --target: a key that may make sandboxes."
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --target: scenarios run at once, each in its own sandbox and session.",
        ),
    ] = 1,
) -> None:
    """Run each scenario; print a line each and `N passed, M failed`."""
    from punchcard.scenarios.over_http import OverHttp

    if target_url is not None and not api_key:
        fail("--target needs --api-key")
    if jobs > 1 and target_url is None:
        fail("--jobs needs --target: in process, scenarios share one database session")
    found = existing(paths)
    with tempfile.TemporaryDirectory(prefix="punchcard-") as tmp:
        engine = None
        shared: InProcess | None = None
        if target_url is not None and api_key:
            reachable(target_url)
        elif database is not None:  # the operator's database: migrated by `db upgrade` only
            engine = database_at_head(database)
            shared = InProcess(engine)
        else:
            engine = open_database(f"sqlite:///{tmp}/scenarios.sqlite3")
            shared = InProcess(engine)
        targets = threading.local()

        def one(path: Path) -> tuple[bool, str, str]:
            """A scenario on this thread's own target (over HTTP, a session of its own)."""
            if not hasattr(targets, "target"):
                targets.target = shared or OverHttp(str(target_url), str(api_key))
            try:
                result = run_scenario(files.load(path), targets.target)
                return result.passed, result.scenario.name, result.message
            except files.ScenarioFileError as exc:
                return False, str(path), str(exc)

        passed = failed = 0
        with (
            Progress(console=console, transient=True, disable=len(found) < 10) as progress,
            ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="scenario") as pool,
        ):
            task = progress.add_task("scenarios", total=len(found))
            for path, (ok, name, message) in zip(found, pool.map(one, found), strict=True):
                shown = escape(f"{path.name}: {name}")
                if ok:
                    passed += 1
                    progress.console.print(f"[green]PASS[/] {shown}")
                else:  # one line per scenario, never wrapped: why it failed goes on it too
                    failed += 1
                    why = escape(" ".join(message.split()))
                    progress.console.print(f"[red]FAIL[/] {shown} -- {why}")
                progress.advance(task)
        if engine is not None:
            engine.dispose()
    print(f"{passed} passed, {failed} failed")
    if not found:  # most likely a wrong path: a run that checked nothing is not a pass
        print("no scenario files found under " + ", ".join(map(str, paths)), file=sys.stderr)
    if failed or not found:
        raise typer.Exit(1)


@app.command()
def parity(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files or folders of them.")],
    a: Annotated[str, typer.Option("--a", help="Base URL of deployment A.")],
    a_key: Annotated[str, typer.Option("--a-key", help="A key of A that may make sandboxes.")],
    b: Annotated[str, typer.Option("--b", help="Base URL of deployment B.")],
    b_key: Annotated[str, typer.Option("--b-key", help="A key of B that may make sandboxes.")],
    tenant_program: Annotated[
        bool,
        typer.Option(
            help="Run each side's own program versions instead of the scenario's program."
        ),
    ] = False,
) -> None:
    """Run scenarios against two deployments and print every observable that differs."""
    from punchcard.client import ApiError
    from punchcard.scenarios.over_http import OverHttp
    from punchcard.scenarios.parity import collecting, compare

    found = existing(paths)
    if not found:  # as `scenario run`: a comparison of nothing is not an agreement
        print("no scenario files found under " + ", ".join(map(str, paths)), file=sys.stderr)
        raise typer.Exit(1)
    reachable(a)
    reachable(b)
    differences = []
    with collecting() as collector:
        for path in found:
            try:
                differences += compare(
                    files.load(path),
                    OverHttp(a, a_key),
                    OverHttp(b, b_key),
                    collector,
                    tenant_program=tenant_program,
                )
            except files.ScenarioFileError as exc:
                fail(str(exc))
            except ApiError as exc:
                fail(f"{path.name}: a server refused: {exc}")
    if not differences:
        print(f"{len(found)} scenarios: A and B agree on every observable")
        return
    table = Table(title="Differences between A and B")
    for column in ("scenario", "step", "observable", "A", "B"):
        table.add_column(column)
    for d in differences:
        table.add_row(d.scenario, d.step, escape(d.observable), escape(str(d.a)), escape(str(d.b)))
    # Wide enough for a log or a pipe: the values are the point, not the terminal's width.
    Console(highlight=False, width=max(console.width, 200)).print(table)
    print(
        f"{len(differences)} differences in {len({d.scenario for d in differences})} of {len(found)} scenarios"
    )
    raise typer.Exit(1)


@program_app.command("check")
def program_check(
    file: Annotated[Path, typer.Argument(help="A program YAML or JSON file.")],
) -> None:
    """Print the problems of a program file, or a one-screen summary of it."""
    try:
        program = parse_program(read_file(file))
    except ProgramError as exc:
        for problem in exc.problems:
            where = f"{file}:{problem.line}" if problem.line else str(file)
            console.print(
                f"[red]{escape(where)}[/]: {escape(problem.path)}: {escape(problem.message)}"
            )
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


DATABASE = typer.Option(
    envvar="PUNCHCARD_DATABASE_URL", help="Database URL, or a SQLite file's path."
)
DEFAULT_DATABASE = "sqlite:///punchcard.sqlite3"
LOG_LEVEL = typer.Option(envvar="PUNCHCARD_LOG_LEVEL", help="debug, info, warning, error.")
ALLOW_PRIVATE = typer.Option(
    "--webhook-allow-private/--no-webhook-allow-private",
    envvar="PUNCHCARD_WEBHOOK_ALLOW_PRIVATE",
    help="Let live webhooks go to loopback and private addresses (tests only).",
)
WORKER_INTERVAL = typer.Option(
    envvar="PUNCHCARD_WORKER_INTERVAL_MS", help="Pause between due-work rounds, ms."
)


@app.command()
def serve(
    database: Annotated[str, DATABASE] = DEFAULT_DATABASE,
    host: Annotated[
        str, typer.Option(envvar="PUNCHCARD_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="PUNCHCARD_PORT", min=0, max=65535, help="Port to listen on.")
    ] = 8000,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run due work in this process.")
    ] = True,
    worker_interval_ms: Annotated[int, WORKER_INTERVAL] = 200,
    processes: Annotated[
        int | None,
        typer.Option(
            envvar="PUNCHCARD_PROCESSES",
            min=1,
            help="API processes sharing the port, each with its own pool.  [default: CPU count]",
        ),
    ] = None,
    inquiries_per_minute: Annotated[
        int,
        typer.Option(
            envvar="PUNCHCARD_INQUIRIES_PER_MINUTE", help="Gift card balance inquiries per key."
        ),
    ] = 30,
    log_level: Annotated[str, LOG_LEVEL] = "info",
    webhook_allow_private: Annotated[bool, ALLOW_PRIVATE] = False,
    demo: Annotated[
        bool, typer.Option(help="Make the demo tenant and print a key and a curl line.")
    ] = False,
) -> None:
    """Migrate the database (one process at a time), then run the HTTP API in --processes
    processes (with the worker in the parent process unless --no-worker)."""
    from punchcard.server import (
        configure_logging,
        cpu_count,
        demo_tenant,
        listening,
        serve_processes,
    )

    configure_logging(log_level_of(log_level))
    try:  # the port first: a server that can not listen must not have migrated anything
        sock = listening(host, port)
    except OSError as exc:
        fail(f"can not listen on {host}:{port}: {exc.strerror or exc}")
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    engine, _ = migrated(database)
    if demo:
        keys = demo_tenant(engine)
        base = f"http://{host}:{port}"
        console.print(f"Punchcard is starting at {base}  (API docs: {base}/docs)")
        console.print(f"Demo tenant {keys['tenant']}")
        console.print(f"  sandbox key: {keys['sandbox_key']}")
        console.print(f"  live key:    {keys['live_key']}")
        console.print("Try:")
        console.print(
            f"  curl -s -H 'Authorization: Bearer {keys['sandbox_key']}' {base}/v1/rewards"
        )
    code = serve_processes(
        engine,
        sock,
        processes or cpu_count(),
        worker=worker,
        worker_interval_s=worker_interval_ms / 1000,
        inquiries_per_minute=inquiries_per_minute,
        webhook_allow_private=webhook_allow_private,
        log_level=log_level,
    )
    if code:
        raise typer.Exit(code)


@app.command("worker")
def worker_command(
    database: Annotated[str, DATABASE] = DEFAULT_DATABASE,
    worker_interval_ms: Annotated[int, WORKER_INTERVAL] = 200,
    log_level: Annotated[str, LOG_LEVEL] = "info",
    webhook_allow_private: Annotated[bool, ALLOW_PRIVATE] = False,
    lease_s: Annotated[
        float | None,
        typer.Option(
            envvar="PUNCHCARD_LEASE_S", help="How long a claim outlives a crashed worker."
        ),
    ] = None,
) -> None:
    """Run a worker process (due work and webhook delivery): several may share one PostgreSQL."""
    from punchcard.server import configure_logging, run_worker

    configure_logging(log_level_of(log_level))
    run_worker(
        database_at_head(database),
        worker_interval_ms / 1000,
        webhook_allow_private=webhook_allow_private,
        lease_s=lease_s,
    )


@app.command()
def audit(database: Annotated[str, DATABASE] = DEFAULT_DATABASE) -> None:
    """Check every invariant of the books on a live database and print a report."""
    from punchcard.audit import run_audit
    from punchcard.services.clock import SystemClock

    findings = run_audit(database_at_head(database), SystemClock().now())
    table = Table(title="Punchcard audit")
    for column in ("check", "checked", "violations", "examples"):
        table.add_column(column)
    for finding in findings:
        table.add_row(
            finding.check,
            str(finding.checked),
            "[green]0[/]" if finding.ok else f"[red]{len(finding.violations)}[/]",
            escape("; ".join(finding.violations[:3])),
        )
    Console(highlight=False, width=max(console.width, 160)).print(table)
    failed = [f for f in findings if not f.ok]
    print(f"{len(findings) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


db_app = typer.Typer(no_args_is_help=True, help="The database's schema.")
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(database: Annotated[str, DATABASE] = DEFAULT_DATABASE) -> None:
    """Bring the schema to this Punchcard's newest migration (a SQLite file is made if
    missing). Safe to run from several processes at once: one migrates, the others wait."""
    engine, before = migrated(database)
    shown = engine.url.render_as_string(hide_password=True)
    engine.dispose()
    if before == head():
        print(f"{shown}: already at migration {before}")
    else:
        print(f"{shown}: migrated from {before or 'an empty database'} to {head()}")


tenant_app = typer.Typer(no_args_is_help=True, help="Tenants (brands) and their environments.")
key_app = typer.Typer(no_args_is_help=True, help="API keys.")
app.add_typer(tenant_app, name="tenant")
app.add_typer(key_app, name="key")


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="The brand's name.")],
    database: Annotated[str, DATABASE] = DEFAULT_DATABASE,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make a tenant with live and sandbox environments and an admin key for each (shown once)."""
    import json

    from punchcard.errors import PunchcardError
    from punchcard.services.clock import SystemClock
    from punchcard.services.tenants import create_tenant

    engine = database_at_head(database)
    try:
        made = create_tenant(engine, name, SystemClock().now())
    except PunchcardError as exc:
        fail(f"{exc.code}: {exc.message}")
    shown = {k: made[k] for k in ("tenant", "sandbox_key", "live_key")}
    if as_json:
        print(json.dumps(shown))
    else:
        for key, value in shown.items():
            console.print(f"{key}: {value}")


@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Option(help="The tenant id.")],
    database: Annotated[str, DATABASE] = DEFAULT_DATABASE,
    environment: Annotated[str, typer.Option(help="live, sandbox, or a sandbox's id.")] = "sandbox",
    scope: Annotated[list[str] | None, typer.Option(help="A scope; repeat for more.")] = None,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Make a narrower API key (printed once; only its hash is kept)."""
    from punchcard.errors import PunchcardError
    from punchcard.services.clock import SystemClock
    from punchcard.services.tenants import create_key, environment_of

    engine = database_at_head(database)
    try:
        with engine.begin() as conn:
            env_id = environment_of(conn, tenant, environment)
            scopes = scope or ["members:read"]
            print(create_key(conn, env_id, scopes, name or ",".join(scopes), SystemClock().now()))
    except PunchcardError as exc:
        fail(f"{exc.code}: {exc.message}")


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[
        str, typer.Argument(help="The key's id: the key up to its last '_' (the whole key works).")
    ],
    database: Annotated[str, DATABASE] = DEFAULT_DATABASE,
) -> None:
    """Revoke an API key: refused from now on, by every serving process within a second."""
    from punchcard.errors import PunchcardError
    from punchcard.services.clock import SystemClock
    from punchcard.services.tenants import revoke_key

    engine = database_at_head(database)
    key_id = "_".join(key_id.strip().split("_", 3)[:3])  # never the secret part
    try:
        with engine.begin() as conn:
            revoke_key(conn, key_id, SystemClock().now())
    except PunchcardError as exc:
        fail(f"{exc.code}: {exc.message}")
    print(f"revoked {key_id}")


@app.command()
def diagram(
    name: Annotated[str, typer.Argument(help="order, reward, hold, points_lot or tier")],
    program: Annotated[Path | None, typer.Option(help="The program whose tiers to draw.")] = None,
) -> None:
    """Print a lifecycle's state diagram as Mermaid text, drawn from its transition table."""
    parsed = None
    if program is not None:
        try:
            parsed = parse_program(read_file(program))
        except ProgramError as exc:
            first, more = exc.problems[0], len(exc.problems) - 1
            where = f"{program}:{first.line}" if first.line else str(program)
            also = f" ({more} more: punchcard program check {program})" if more else ""
            fail(f"{where}: {first.path}: {first.message}{also}")
    try:
        text = render_diagram(name, parsed)
    except ValueError as exc:
        fail(str(exc))
    print(text)


@app.command()
def demo(
    database: Annotated[
        str | None, typer.Option(help="Database URL; default: a temporary SQLite file.")
    ] = None,
) -> None:
    """Load the example program, run a small story, print balances and one order's explanation."""
    from punchcard.demo.story import run_demo

    with tempfile.TemporaryDirectory(prefix="punchcard-demo-") as tmp:
        if database is not None:  # the operator's database: migrated by `db upgrade` only
            engine = database_at_head(database)
        else:
            engine = open_database(f"sqlite:///{tmp}/demo.sqlite3")
        run_demo(engine, DEMO_PROGRAM.read_text(), console, datetime(2026, 3, 3, 15, 0, tzinfo=UTC))
        engine.dispose()


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the data set into.")],
    seed: Annotated[int, typer.Option(help="The same seed and sizes give the same bytes.")] = 7,
    orders: Annotated[int, typer.Option(min=0, help="Orders to make.")] = 10_000,
    stores: Annotated[
        int | None, typer.Option(min=1, help="Stores; default one per 25,000 orders, at least 4.")
    ] = None,
    members: Annotated[
        int | None, typer.Option(min=1, help="Members; default enough for the visit rates.")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="First local day, YYYY-MM-DD; default 2026-03-02.")
    ] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Days of orders; default 91.")] = None,
) -> None:
    """Write a synthetic chain's traffic: program.yaml, operations.jsonl, chain.json (docs/synthetic.md)."""
    from datetime import date

    from punchcard.synthetic import DEFAULT_START, make_chain, write_data_set

    try:
        first = DEFAULT_START if start is None else date.fromisoformat(start)
    except ValueError:
        fail(f"--start: {start} is not a date like 2026-03-02")
    chain = make_chain(
        seed=seed, orders=orders, stores=stores, members=members, start=first, days=days
    )
    with Progress(console=console, transient=True, disable=orders < 50_000) as progress:
        task = progress.add_task("orders", total=orders)
        try:
            summary = write_data_set(out_dir, chain, on_order=lambda: progress.advance(task))
        except OSError as exc:
            fail(f"can not write to {out_dir}: {exc.strerror or exc}")
    counts = summary["counts"]
    print(
        f"{sum(counts.values()):,} operations ({orders:,} orders, {counts.get('refund', 0):,} refunds, "
        f"{counts.get('void', 0):,} voids, {counts.get('issue_gift_card', 0):,} gift cards) "
        f"for {len(chain.stores)} stores and {chain.members:,} members, "
        f"{summary['start']} to {summary['end']}, in {out_dir}"
    )
    from punchcard.services.clock import SystemClock

    last = summary["span"]["last"]
    if last and datetime.fromisoformat(last) > SystemClock().now():
        console.print("[yellow]Some operations are in the future: a server refuses such orders.[/]")
