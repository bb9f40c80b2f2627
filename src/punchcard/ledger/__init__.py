"""Double-entry ledgers, one per asset: each program's points, each currency's stored value."""
