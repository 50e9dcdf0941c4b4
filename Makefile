# One entry point for every routine task; CI (.ci/run) calls the same targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make demo: the whole product on an embedded database, nothing to install
demo: $(STAMP)
	$(BIN)/meterwatch demo

## make test: the whole suite against real PostgreSQL/TimescaleDB, Redis, SMTP and Chromium
test: $(STAMP)
	bash scripts/ensure-services.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## make bench: the benchmarks, with figures printed next to their baselines
bench: $(STAMP)
	$(BIN)/meterwatch bench all

## make services: install TimescaleDB and start PostgreSQL and Redis (as root; what CI does)
services:
	bash scripts/install-timescaledb.sh
	bash scripts/start-services.sh
	bash scripts/install-browser.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
