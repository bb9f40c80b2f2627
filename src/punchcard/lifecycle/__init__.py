"""Lifecycles as transition tables: the same table enforces the rules and draws the diagram."""
