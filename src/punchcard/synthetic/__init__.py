"""A synthetic restaurant chain's loyalty and gift card traffic, reproducible from a seed.

`operations(seed=7, orders=1_000_000)` streams API requests in time order without
holding the data set; `write_data_set` writes it as files; `punchcard generate` is
the command. What is modelled and why: docs/synthetic.md.
"""

from __future__ import annotations

from punchcard.synthetic.chain import DEFAULT_START, Chain, Store, make_chain
from punchcard.synthetic.files import write_data_set
from punchcard.synthetic.operations import Operation, operations, stream

__all__ = [
    "DEFAULT_START",
    "Chain",
    "Operation",
    "Store",
    "make_chain",
    "operations",
    "stream",
    "write_data_set",
]
