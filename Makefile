# Two commands on a fresh machine: `make demo` (the whole local DAG on synthetic data) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo's pseudonymisation key: public and for synthetic data only. Real data needs your own secret key.
DEMO_KEY := fracture-demo-key-not-secret

.PHONY: venv demo test lint format bench image audit clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	FRACTURE_PSEUDONYM_KEY=$${FRACTURE_PSEUDONYM_KEY:-$(DEMO_KEY)} $(BIN)/dvc repro
	@$(BIN)/fracture demo-summary

test: $(STAMP)
	$(BIN)/pytest -m "not gpu" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

audit: $(STAMP)
	$(BIN)/pip-audit -r requirements.lock --progress-spinner off

clean:
	rm -rf data/raw/demo data/interim data/processed models reports mlflow.db mlruns .dvc/tmp
