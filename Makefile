# Two commands on a fresh machine with only Python 3.11+:  make run  /  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install simulator worker api bench soak clean token report

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole service on the embedded stack (PostgreSQL, Temporal + UI, worker, API, simulator)
run: $(STAMP)
	$(BIN)/python -m devstack

## test: lint, types, and the whole test suite against real PostgreSQL and Temporal
test: $(STAMP)
	$(BIN)/python -m devstack.system chromium chromium-driver prometheus kubernetes-client nodejs npm
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: figures, not tests, on a stack of its own; e.g. BENCH_ARGS="--clients 1000 --latencies 0"
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## soak: faults together at scale while API users work, figures and checks; e.g. SOAK_MINUTES=3 SOAK_SEED=7
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(BIN)/python -m soak --minutes $(SOAK_MINUTES) $(if $(SOAK_SEED),--seed $(SOAK_SEED)) $(SOAK_ARGS)

## token: a bearer token of the embedded mode; e.g. TOKEN_ARGS="--permissions clients:read --hours 1"
token: $(STAMP)
	@$(BIN)/python -m devstack.token $(TOKEN_ARGS)

## report: mail the daily report now (needs make run's worker); e.g. REPORT_ARGS="--day 2026-11-27"
report: $(STAMP)
	@$(BIN)/python -m report $(REPORT_ARGS)

simulator: $(STAMP)
	$(BIN)/python -m simulator

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
