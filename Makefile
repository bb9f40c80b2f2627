# `make run` and `make test` are all a new machine needs: both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck scenarios demo bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/punchcard serve --demo

test: $(STAMP) lint typecheck
	$(BIN)/pytest -n 2 -q
	$(BIN)/punchcard scenario run ../shared/examples/scenarios scenarios

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

scenarios: $(STAMP)
	$(BIN)/punchcard scenario run ../shared/examples/scenarios scenarios

demo: $(STAMP)
	$(BIN)/punchcard demo

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/replay.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
