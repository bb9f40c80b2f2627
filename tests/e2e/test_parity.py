"""`punchcard parity` against two real servers: agreement, and a difference that shows."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import EXAMPLES, ROOT
from .conftest import PUNCHCARD, cli, start_server, stop, upgrade

PROGRAM = (ROOT / "src/punchcard/demo/burrito-rewards.yaml").read_text()


@pytest.fixture(scope="module")
def two_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[tuple[str, dict[str, str]]]]:
    servers = []
    for name in ("a", "b"):
        database = f"sqlite:///{tmp_path_factory.mktemp(name)}/{name}.sqlite3"
        upgrade(database)
        tenant = json.loads(
            cli("tenant", "create", f"Parity {name}", "--json", "--database", database)
        )
        url, process = start_server(database)
        servers.append((url, tenant, process))
    yield [(url, tenant) for url, tenant, _ in servers]
    for _, _, process in servers:
        stop(process)


def _parity(
    servers: list[tuple[str, dict[str, str]]], *args: str
) -> subprocess.CompletedProcess[str]:
    (a, ka), (b, kb) = servers
    return subprocess.run(
        [
            PUNCHCARD,
            "parity",
            "--a",
            a,
            "--a-key",
            ka["live_key"],
            "--b",
            b,
            "--b-key",
            kb["live_key"],
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_two_servers_of_the_same_version_agree(
    two_servers: list[tuple[str, dict[str, str]]],
) -> None:
    result = _parity(two_servers, str(EXAMPLES / "scenarios"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "3 scenarios: A and B agree on every observable"


def test_a_different_program_version_shows_as_differences(
    two_servers: list[tuple[str, dict[str, str]]], tmp_path: Path
) -> None:
    for (url, tenant), points in zip(two_servers, ("10", "12"), strict=True):
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tenant['live_key']}"}
        ) as http:
            source = PROGRAM.replace("points_per_unit: 10", f"points_per_unit: {points}")
            answer = http.post(
                "/v1/programs/versions",
                json={"source": source, "live_from": "2026-01-01T00:00:00Z"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            assert answer.status_code in (201, 422), answer.text
            if answer.status_code == 422:  # live_from in the past: go live now instead
                http.post(
                    "/v1/programs/versions",
                    json={"source": source},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
    result = _parity(
        two_servers, "--tenant-program", str(EXAMPLES / "scenarios" / "01-what-qualifies.yaml")
    )
    assert result.returncode == 1
    assert "member dana: points" in result.stdout
    assert (
        "'posted': 377" in result.stdout and "'posted': 432" in result.stdout
    )  # 277+100 vs 332+100
    assert "webhook events" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("in 1 of 1 scenarios")
