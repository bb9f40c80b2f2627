# `make run` and `make test` are all a new machine needs: both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lock run reset test lint typecheck scenarios demo bench bench-scale soak clean

# The exact set in requirements.lock, then the project itself (its build backend is pinned there
# too). After a change to pyproject.toml's dependencies: make lock.
$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-pin requirements.lock from pyproject.toml's ranges (pip-tools, in a venv of its own).
lock:
	test -d .lockvenv || $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet pip-tools
	.lockvenv/bin/pip-compile --quiet --extra dev --build-deps-for editable --allow-unsafe \
	  --strip-extras --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

run: $(STAMP)
	$(BIN)/punchcard serve --demo

# Start over: the demo database `make run` keeps (its WAL files too).
reset:
	rm -f punchcard.sqlite3 punchcard.sqlite3-wal punchcard.sqlite3-shm

test: $(STAMP) lint typecheck
	$(BIN)/pytest -n 2 -q --durations=25
	$(BIN)/punchcard scenario run examples/scenarios scenarios

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

scenarios: $(STAMP)
	$(BIN)/punchcard scenario run examples/scenarios scenarios

demo: $(STAMP)
	$(BIN)/punchcard demo

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/end_to_end.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/replay.py

# What an order costs with 100,000 members and a million orders already in PostgreSQL, beside
# an empty database (PUNCHCARD_BENCH_POSTGRES_URL, as for bench/end_to_end.py; about 20 minutes).
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

# The crash suite at 10,000 orders and the bank test for a minute (needs PostgreSQL, like CI).
soak: $(STAMP)
	PUNCHCARD_TEST_POSTGRES_URL=$${PUNCHCARD_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres} \
	PUNCHCARD_CRASH_ORDERS=10000 PUNCHCARD_BANK_S=60 \
	$(BIN)/pytest -q tests/e2e/test_crash.py tests/e2e/test_bank.py

clean:
	rm -rf $(VENV) .lockvenv .pytest_cache .mypy_cache .ruff_cache .hypothesis
