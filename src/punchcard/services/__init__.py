"""Use cases. Each runs in one unit of work: state, ledger entries and outbox rows, or nothing."""
