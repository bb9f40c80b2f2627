"""Parity: run the same scenarios against two deployments and compare everything observable.

After every step it records, on each side, the step's error code (or ok) and every
member's and gift card's state the scenario has named: posted, pending (with each
pending item and its expected time), available, tier, visits, punch cards, rewards,
gift card balance and last approval. At the end of each scenario it compares the
webhook events each side delivered to a receiver on this machine. Scenario
expectations are not judged here: the two sides are judged against each other.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from punchcard.errors import PunchcardError
from punchcard.scenarios.files import Scenario
from punchcard.scenarios.over_http import OverHttp
from punchcard.scenarios.runner import perform
from punchcard.services.inputs import as_name, parse_time

QUIET_S = 1.5  # a side's webhooks are settled once nothing has arrived for this long


@dataclass(frozen=True)
class Difference:
    scenario: str
    step: str
    observable: str
    a: Any
    b: Any


class Collector:
    """A webhook receiver on loopback; each side's sandbox gets its own path."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.last = time.monotonic()
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with collector.lock:
                    collector.events.setdefault(self.path, []).append(json.loads(body))
                    collector.last = time.monotonic()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def settled(self, timeout_s: float = 30.0) -> None:
        """Wait until nothing has arrived for QUIET_S, counting from now at the earliest."""
        since = time.monotonic()
        deadline = since + timeout_s
        while time.monotonic() < deadline and time.monotonic() - max(self.last, since) < QUIET_S:
            time.sleep(0.1)


@contextmanager
def collecting() -> Iterator[Collector]:
    collector = Collector()
    thread = threading.Thread(target=collector.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.server.shutdown()
        collector.server.server_close()


def _observe(
    target: OverHttp, members: list[str], cards: list[str], clock: datetime
) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for member in members:
        try:
            state = target.api.member(member)
            seen[f"member {member}"] = {
                "points": {k: state["points"][k] for k in ("posted", "pending", "available")},
                "pending_items": state["points"]["pending_items"],
                "tier": state["tier"],
                "visits": state["visits"],
                "punch_cards": state["punch_cards"],
                "rewards": {k: sorted(v) for k, v in state["rewards"].items()},
            }
        except PunchcardError as exc:
            seen[f"member {member}"] = exc.code
    for card in cards:
        try:
            seen[f"gift card {card}"] = target.gift_card(card)
        except PunchcardError as exc:
            seen[f"gift card {card}"] = exc.code
    return seen


def _names(scenario: Scenario) -> tuple[list[str], list[str]]:
    members, cards = [], []
    for step in scenario.steps:
        if isinstance(step, dict) and isinstance(step.get("enroll"), dict):
            members.append(as_name(step["enroll"].get("member"), "member"))
        if (
            isinstance(step, dict)
            and isinstance(step.get("gift_card"), dict)
            and "issue" in step["gift_card"]
        ):
            cards.append(as_name(step["gift_card"]["issue"], "gift card"))
    return members, cards


def _run(
    scenario: Scenario, target: OverHttp, hook_url: str, tenant_program: bool
) -> list[dict[str, Any]]:
    """Each step's outcome and the observables after it, on one side. The sandbox is left
    in place: the caller deletes it once its webhooks have arrived."""
    members, cards = _names(scenario)
    clock = parse_time(scenario.start, "start")
    target.start(scenario.program, clock, upload=not tenant_program, hook_url=hook_url)
    record = []
    for number, step in enumerate(scenario.steps, start=1):
        verbs = [k for k in step if k != "error"] if isinstance(step, dict) else []
        if len(verbs) != 1 or verbs[0] == "expect":
            continue
        clock, error = perform(target, scenario.path.parent, verbs[0], step[verbs[0]], clock)
        record.append(
            {
                "step": f"{number} ({verbs[0]})",
                "outcome": "ok" if error is None else error.code,
                "state": _observe(target, members, cards, clock),
            }
        )
    return record


def _events(events: list[dict[str, Any]]) -> list[str]:
    """Delivered events, in an order both sides agree on (delivery order may differ)."""
    return sorted(json.dumps(event, sort_keys=True) for event in events)


def compare(
    scenario: Scenario,
    a: OverHttp,
    b: OverHttp,
    collector: Collector,
    *,
    tenant_program: bool = False,
) -> list[Difference]:
    tag = uuid.uuid4().hex  # this comparison's webhook paths
    try:
        runs = [
            _run(scenario, side, f"{collector.base}/{name}/{tag}", tenant_program)
            for name, side in (("a", a), ("b", b))
        ]
        collector.settled()  # the sandboxes live until their webhooks have arrived
    finally:
        a.finish()
        b.finish()
    differences = []
    name = scenario.path.name
    for seen_a, seen_b in zip(runs[0], runs[1], strict=True):
        if seen_a["outcome"] != seen_b["outcome"]:
            differences.append(
                Difference(name, seen_a["step"], "outcome", seen_a["outcome"], seen_b["outcome"])
            )
        for key in sorted(set(seen_a["state"]) | set(seen_b["state"])):
            left, right = seen_a["state"].get(key), seen_b["state"].get(key)
            if left == right:
                continue
            if isinstance(left, dict) and isinstance(right, dict):
                for part in sorted(set(left) | set(right)):
                    if left.get(part) != right.get(part):
                        differences.append(
                            Difference(
                                name,
                                seen_a["step"],
                                f"{key}: {part}",
                                left.get(part),
                                right.get(part),
                            )
                        )
            else:
                differences.append(Difference(name, seen_a["step"], key, left, right))
    with collector.lock:
        events_a = _events(collector.events.get(f"/a/{tag}", []))
        events_b = _events(collector.events.get(f"/b/{tag}", []))
    if not events_a and not events_b:
        # Every scenario raises events: none at all means the servers could not reach the
        # receiver on this machine, and silence must never pass for agreement.
        differences.append(
            Difference(
                name,
                "end",
                "webhook events",
                "none arrived",
                "none arrived (is this machine reachable?)",
            )
        )
    elif events_a != events_b:
        only_a = [e for e in events_a if e not in events_b]
        only_b = [e for e in events_b if e not in events_a]
        differences.append(
            Difference(
                name,
                "end",
                "webhook events",
                f"{len(events_a)} ({len(only_a)} only here)",
                f"{len(events_b)} ({len(only_b)} only here)",
            )
        )
    return differences
