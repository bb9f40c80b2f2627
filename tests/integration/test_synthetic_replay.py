"""A generated data set is traffic the real API accepts: replayed request by request, the
books stay clean; and `punchcard generate` writes the same bytes for the same seed."""

from __future__ import annotations

import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from starlette.exceptions import StarletteDeprecationWarning
from typer.testing import CliRunner

from punchcard.api.app import create_app
from punchcard.audit import run_audit
from punchcard.cli import app as cli
from punchcard.engine.money import parse_money
from punchcard.services.loyalty import Loyalty
from punchcard.services.tenants import create_tenant
from punchcard.store.database import open_database
from punchcard.store.tables import gift_cards, holds, ledger_accounts, orders
from punchcard.synthetic import operations

with warnings.catch_warnings():
    # Starlette would rather have httpx2 behind its test client; httpx is what this project pins.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


class MovingClock:
    """The server's clock, set to each operation's time as the replay goes."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def test_three_hundred_generated_orders_replay_through_the_api_without_an_error(
    database_url: str,
) -> None:
    ops = list(operations(seed=11, orders=300, stores=5, days=14))
    engine = open_database(database_url)
    start = ops[0].at
    made = create_tenant(engine, "synthetic chain", start)
    env = made["sandbox_environment"]
    clock = MovingClock(start)
    due = Loyalty(engine, env)
    answers: Counter[tuple[str, int]] = Counter()
    failures = []
    with TestClient(create_app(engine, clock)) as client:
        client.headers.update({"Authorization": f"Bearer {made['sandbox_key']}"})
        for op in ops:
            clock.at = op.at
            due.run_due(op.at)  # what the worker does as time passes
            response = client.request(
                op.method,
                op.path,
                json=op.body,
                headers={"Idempotency-Key": op.idempotency_key},
            )
            answers[(op.kind, response.status_code)] += 1
            if response.status_code >= 300:
                failures.append((op.kind, op.path, response.text))
    end = ops[-1].at + timedelta(minutes=1)
    due.run_due(end)
    kinds = Counter(op.kind for op in ops)
    assert failures == []
    assert answers[("place_order", 201)] == 300
    assert sum(answers.values()) == len(ops)
    findings = run_audit(engine, end)
    assert [(f.check, f.violations[:2]) for f in findings if not f.ok] == []
    assert all(f.checked > 0 for f in findings[:3])
    issued = sum(parse_money(op.body["amount"]) for op in ops if op.kind == "issue_gift_card")
    spent = sum(parse_money(op.body["amount"]) for op in ops if op.kind == "authorize_gift_card")
    with engine.connect() as conn:
        states = Counter(conn.execute(sa.select(orders.c.state)).scalars())
        card_money = conn.execute(
            sa.select(sa.func.sum(ledger_accounts.c.balance)).where(
                ledger_accounts.c.name.like("card:%")
            )
        ).scalar_one()
        captured = conn.execute(sa.select(sa.func.sum(holds.c.captured))).scalar_one()
        cards = conn.execute(sa.select(sa.func.count()).select_from(gift_cards)).scalar_one()
    assert states == {"closed": 300 - kinds["void"], "voided": kinds["void"]}
    assert kinds["issue_gift_card"] == cards > 0
    assert kinds["authorize_gift_card"] > 0 and kinds["refund"] > 0 and kinds["void"] > 0
    assert (captured, card_money) == (spent, issued - spent)
    engine.dispose()


def test_generate_writes_the_same_bytes_for_the_same_seed(tmp_path: Path) -> None:
    runner = CliRunner()
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        result = runner.invoke(
            cli, ["generate", str(tmp_path / name), "--seed", seed, "--orders", "500"]
        )
        assert result.exit_code == 0, result.output
        assert " (500 orders, " in result.output
    files = ("program.yaml", "chain.json", "operations.jsonl")
    a, b, c = ({f: (tmp_path / d / f).read_bytes() for f in files} for d in "abc")
    assert a == b
    assert a["operations.jsonl"] != c["operations.jsonl"]
    lines = a["operations.jsonl"].decode().splitlines()
    assert sum('"kind":"place_order"' in line for line in lines) == 500
    assert lines[0].startswith('{"at":"2026-03-02T00:00:00+00:00","kind":"publish_program"')
    assert datetime.fromisoformat(lines[-1][7:32]) > datetime(2026, 3, 2, tzinfo=UTC)
