"""The scenario harness (docs/scenarios.md): loyalty stories run against the real system."""
