"""The scenario harness (spec/scenarios.md): loyalty stories run against the real system."""
