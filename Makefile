# Two commands on a fresh machine: `make demo` (the whole local DAG on synthetic data) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov in a venv of its own: its pins (tabulate<0.10, ...) conflict with the project's lock file.
SCAN_VENV := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed
# The demo's pseudonymisation key: public and for synthetic data only. Real data needs your own secret key.
DEMO_KEY := fracture-demo-key-not-secret

.PHONY: venv demo cv test test-fast docs lint format params-format bench image audit audit-offline scan clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

# DVC runs each stage's `fracture ...` command in a shell: the venv goes first on PATH.
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" FRACTURE_PSEUDONYM_KEY=$${FRACTURE_PSEUDONYM_KEY:-$(DEMO_KEY)} $(BIN)/dvc repro
	@$(BIN)/python -m tools.demo

# The cross-validation study (cv/dvc.yaml): cv.folds folds of cv.epochs epochs, pooled out of fold (README,
# Cross-validation). It reuses the demo's ingest and preprocess outputs (running those stages first if needed).
cv: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" FRACTURE_PSEUDONYM_KEY=$${FRACTURE_PSEUDONYM_KEY:-$(DEMO_KEY)} $(BIN)/dvc repro cv/dvc.yaml

test: $(STAMP)
	$(BIN)/pytest -m "not gpu" $(PYTEST_ARGS)

# The fast tier: unit tests and each KFP component's own test; no services, no demo, no training to convergence.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not gpu and not slow and not integration and not e2e" tests/unit components $(PYTEST_ARGS)

# The docs site (Sphinx + MyST Markdown, furo theme) into build/docs; any warning fails the build.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs build/docs
	@echo "docs: build/docs/index.html"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# params.yaml (and the production profile) in the form `dvc exp run -S` writes back: an experiment's diff is only
# the values it changed (tests/unit/test_params_format.py checks it).
params-format: $(STAMP)
	$(BIN)/python -m tests.params_format

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

IMAGE ?= ghcr.io/fracture-mlops/fracture
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GIT_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
image:
	docker build -f docker/Dockerfile --build-arg VERSION=$(VERSION) --build-arg GIT_COMMIT=$(GIT_COMMIT) \
		-t $(IMAGE):$(VERSION) -t $(IMAGE):$(VERSION)-$(GIT_COMMIT) .
	@echo "push with: docker push $(IMAGE):$(VERSION) && docker push $(IMAGE):$(VERSION)-$(GIT_COMMIT)"

# Known vulnerabilities in the pinned dependencies. Exit 0 only when every package was checked and none is
# vulnerable; a package the advisory service could not be asked about fails the audit (a skipped audit is not a
# pass). Offline, `make audit-offline` says plainly that nothing was audited and exits 0.
audit: $(STAMP)
	$(BIN)/python -m tools.audit requirements.lock

audit-offline: $(STAMP)
	$(BIN)/python -m tools.audit requirements.lock --offline

$(SCAN_STAMP): requirements-scan.lock
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install -q -r requirements-scan.lock
	touch $(SCAN_STAMP)

# Kubernetes policy scan (checkov): the manifests in infra/, the compiled pipeline's task pods and a TrainJob node
# pod. Any failed check fails the scan; the only skips are `checkov.io/skip*` annotations with their reason in the
# manifest (infra/) or in infra/kfp/pods.py (what the KFP backend or the Trainer runtime decides). overlays/ holds
# partial patches.
scan: $(STAMP) $(SCAN_STAMP)
	rm -rf build/scan
	$(BIN)/python infra/kfp/pods.py params.yaml build/scan/kfp
	$(SCAN_VENV)/bin/checkov --framework kubernetes --skip-download --compact --quiet -d infra --skip-path overlays
	$(SCAN_VENV)/bin/checkov --framework kubernetes --skip-download --compact --quiet -d build/scan/kfp

clean:
	rm -rf data/raw/demo data/interim data/processed models reports mlflow.db mlruns .dvc/tmp
