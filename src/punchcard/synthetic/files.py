"""Writing a data set: program.yaml, operations.jsonl (one request a line) and chain.json.

The only I/O of the package. chain.json is written last, from what was streamed, so
its counts are the file's and not a second guess.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from punchcard.synthetic import chain as chain_module
from punchcard.synthetic import gift_cards, menu, operations, timing
from punchcard.synthetic.chain import Chain
from punchcard.synthetic.operations import stream

WRITE_BUFFER_BYTES = 1 << 20


def write_data_set(
    out_dir: Path,
    chain: Chain,
    program: str | None = None,
    *,
    on_order: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write the data set of `chain` into `out_dir` and return what chain.json says."""
    source = operations.DEMO_PROGRAM.read_text() if program is None else program
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "program.yaml").write_text(source, encoding="utf-8")
    counts: Counter[str] = Counter()
    lines = 0
    first = last = None
    with (out_dir / "operations.jsonl").open(
        "w", encoding="utf-8", newline="\n", buffering=WRITE_BUFFER_BYTES
    ) as out:
        for op in stream(chain, source):
            out.write(op.to_json())
            out.write("\n")
            counts[op.kind] += 1
            first = first or op.at
            last = op.at
            if op.kind == "place_order":
                assert op.body is not None
                lines += len(op.body["lines"])
                if on_order is not None:
                    on_order()
    summary = describe(chain, dict(sorted(counts.items())), lines)
    summary["span"] = {
        "first": None if first is None else first.isoformat(),
        "last": None if last is None else last.isoformat(),
    }
    (out_dir / "chain.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def describe(chain: Chain, counts: dict[str, int], lines: int) -> dict[str, Any]:
    """chain.json: the seed and sizes that remake the set, its stores, and how much of each kind."""
    end = chain.start.toordinal() + chain.days - 1
    return {
        "seed": chain.seed,
        "sizes": {
            "orders": chain.orders,
            "stores": len(chain.stores),
            "members": chain.members,
            "days": chain.days,
        },
        "start": chain.start.isoformat(),
        "end": type(chain.start).fromordinal(end).isoformat(),
        "stores": [
            {
                "id": s.id,
                "name": s.name,
                "timezone": s.city.timezone,
                "tax_rate_percent": f"{s.city.tax_per_100k / 1000:.3f}",
                "price_level_percent": s.city.price_level,
                "size": s.size,
            }
            for s in chain.stores
        ],
        "counts": counts,
        "lines": lines,
        "rates": {
            "away_from_home_percent": operations.AWAY_PERCENT,
            "open_then_closed_percent": operations.OPEN_PERCENT,
            "void_per_mille": operations.VOID_PER_MILLE,
            "refund_per_mille": operations.REFUND_PER_MILLE,
            "gift_card_in_store_per_mille": gift_cards.IN_STORE_PER_MILLE,
            "gift_card_online_per_mille": gift_cards.ONLINE_PER_MILLE,
            "gift_card_use_percent": gift_cards.USE_PERCENT,
            "catering_per_mille": menu.CATERING_PER_MILLE,
            "median_visits_per_week": chain_module.VISITS_MEDIAN_PER_WEEK,
            "open_hours_local": "10:30-22:00",
            "lunch_share": timing.LUNCH[0],
            "dinner_share": timing.DINNER[0],
        },
    }
