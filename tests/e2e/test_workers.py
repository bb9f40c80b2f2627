"""Separate worker processes sharing one PostgreSQL: every order posts exactly once."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa

from punchcard.store.tables import ledger_transactions

from ..conftest import ROOT
from .conftest import PUNCHCARD, cli, start_server, stop


@pytest.mark.postgres
def test_three_workers_post_every_order_exactly_once(postgres_url: str) -> None:
    tenant = json.loads(cli("tenant", "create", "Workers", "--json", "--database", postgres_url))
    url, api = start_server(postgres_url, "--no-worker")
    workers = [
        subprocess.Popen(
            [
                PUNCHCARD,
                "worker",
                "--database",
                postgres_url,
                "--worker-interval-ms",
                "50",
                "--log-level",
                "warning",
            ],
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tenant['live_key']}"}, timeout=30
        ) as http:

            def post(path: str, body: dict[str, object]) -> None:
                answer = http.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
                assert answer.status_code == 201, answer.text

            post(
                "/v1/programs/versions",
                {"source": (ROOT / "src/punchcard/demo/burrito-rewards.yaml").read_text()},
            )
            for member in range(4):
                post("/v1/members", {"id": f"m{member}"})
            for n in range(40):
                post(
                    "/v1/orders",
                    {
                        "id": f"o{n}",
                        "member": f"m{n % 4}",
                        "lines": [
                            {
                                "id": "l1",
                                "sku": "T",
                                "category": "taco",
                                "qty": 1,
                                "unit_price": "3.00",
                            }
                        ],
                    },
                )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                balances = [http.get(f"/v1/members/m{m}/balance").json() for m in range(4)]
                if all(b["pending"] == 0 for b in balances):
                    break
                time.sleep(0.2)
            assert [(b["posted"], b["pending"]) for b in balances] == [(300, 0)] * 4
        engine = sa.create_engine(postgres_url)
        with engine.connect() as conn:
            earns = conn.execute(
                sa.select(sa.func.count())
                .select_from(ledger_transactions)
                .where(ledger_transactions.c.kind == "earn")
            ).scalar_one()
        engine.dispose()
        assert earns == 40
    finally:
        for process in workers:
            stop(process)  # type: ignore[arg-type]
        stop(api)
