"""Whole stories over HTTP: scenarios in sandboxes, concurrent checkouts, and `make run`'s demo."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from punchcard.scenarios.files import find_files

from ..conftest import EXAMPLES, ROOT
from .conftest import PUNCHCARD, Server, free_port, start_server, stop


def test_every_scenario_passes_over_http_in_fresh_sandboxes(server: Server) -> None:
    result = subprocess.run(
        [
            PUNCHCARD,
            "scenario",
            "run",
            "--target",
            server.url,
            "--api-key",
            server.a["live_key"],
            "--jobs",
            "4",
            str(EXAMPLES / "scenarios"),
            str(ROOT / "scenarios"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    count = len(list((ROOT / "scenarios").glob("*.yaml"))) + 3
    assert result.stdout.strip().splitlines()[-1] == f"{count} passed, 0 failed"
    # Four at once (--jobs 4), printed in file order all the same.
    printed = [
        line.split()[1].rstrip(":")
        for line in result.stdout.splitlines()
        if line.startswith(("PASS ", "FAIL "))
    ]
    wanted = find_files([EXAMPLES / "scenarios", ROOT / "scenarios"])
    assert printed == [path.name for path in wanted] and len(printed) == count
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.a['live_key']}"}
    ) as http:
        assert http.get("/v1/clock").json()["movable"] is False  # live was never touched


@pytest.mark.postgres
def test_a_hundred_concurrent_redemptions_never_overspend_a_card(postgres_server: Server) -> None:
    server = postgres_server
    key = server.b["live_key"]
    card = f"g-{uuid.uuid4().hex[:8]}"
    with server.client(key) as http:
        http.post(
            "/v1/gift-cards",
            json={"id": card, "amount": "250.00"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )

    def redeem(_: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/gift-cards/{card}/redeem",
            json={"amount": "3.00"},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(redeem, range(100)))
    approved = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 402]
    assert len(approved) == 83 and len(refused) == 17  # 83 x 3.00 = 249.00 fits in 250.00
    with server.client(key) as http:
        assert http.get(f"/v1/gift-cards/{card}").json()["balance"]["amount"] == "1.00"


def test_make_runs_demo_prints_a_url_a_key_and_a_curl_line_that_works(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            PUNCHCARD,
            "serve",
            "--demo",
            "--port",
            str(port),
            "--database",
            f"sqlite:///{tmp_path}/demo.sqlite3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines: list[str] = []
        while not (lines and lines[-1].startswith("  curl")):  # the demo's last line
            line = process.stdout.readline() if process.stdout else ""
            assert line, f"the demo stopped printing: {lines}"
            lines.append(line)
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}" in text
        curl = lines[-1].strip()
        key = re.search(r"Bearer (\S+)'", curl)
        url = re.search(r"(http://\S+)$", curl)
        assert key and url
        for _ in range(100):
            try:
                answer = httpx.get(
                    url.group(1), headers={"Authorization": f"Bearer {key.group(1)}"}
                )
                break
            except httpx.TransportError:
                import time

                time.sleep(0.1)
        assert answer.status_code == 200
        assert [r["id"] for r in answer.json()["rewards"]] == ["free-burrito", "five-off"]
    finally:
        stop(process)  # type: ignore[arg-type]


def test_an_api_only_server_leaves_points_pending_and_says_so(tmp_path: Path) -> None:
    """Points posting a second after the close: past that second, with no worker, they are
    still pending, and a read given the token of a later write says it is not consistent.
    (With no delay the close posts them itself: no worker is needed.)"""
    import json

    from .conftest import cli, upgrade

    database = f"sqlite:///{tmp_path}/noworker.sqlite3"
    upgrade(database)
    tenant = json.loads(cli("tenant", "create", "Gamma", "--json", "--database", database))
    url, process = start_server(database, "--no-worker")
    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tenant['live_key']}"}
        ) as http:
            program = (ROOT / "src/punchcard/demo/burrito-rewards.yaml").read_text()
            delayed = program.replace("accrual_delay: PT0S", "accrual_delay: PT1S")
            http.post(
                "/v1/programs/versions", json={"source": delayed}, headers={"Idempotency-Key": "p"}
            )
            http.post("/v1/members", json={"id": "ann"}, headers={"Idempotency-Key": "m"})
            placed = http.post(
                "/v1/orders",
                headers={"Idempotency-Key": "o"},
                json={
                    "id": "o1",
                    "member": "ann",
                    "lines": [
                        {"id": "l1", "sku": "T", "category": "taco", "qty": 1, "unit_price": "4.00"}
                    ],
                },
            )
            due = datetime.fromisoformat(placed.json()["posting"]["expected_at"])
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.1)
            later = http.post("/v1/members", json={"id": "bob"}, headers={"Idempotency-Key": "b"})
            token = later.json()["consistency_token"]
            balance = http.get(
                "/v1/members/ann/balance", params={"consistency_token": token, "wait_ms": 300}
            ).json()
            assert balance["consistent"] is False
            assert (balance["posted"], balance["pending"]) == (0, 40)
            assert balance["pending_items"][0]["order"] == "o1"
    finally:
        stop(process)
