# mnist-pipeline: every command a user needs. `make help` lists them.
SHELL := /bin/bash
PYTHON_FOR_VENV ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# Stages run `python -m stages.<name>`: put the environment's python first on the PATH.
export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))
# The team server's port on 127.0.0.1 (`make team-server TEAM_PORT=5051`), and the folder of its
# database, artifacts and secrets (as root, one that the postgres user can enter).
TEAM_PORT ?= 5050
TEAM_STATE_DIR ?= .team
# `make team-server TLS=1`: the TLS proxy (nginx) in front, on https://localhost:$(TEAM_TLS_PORT).
TLS ?=
TEAM_TLS_PORT ?= 5443
# `make test` runs the suite on this many pytest-xdist workers (tests/conftest.py groups them).
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup repro experiments test test-fast lint ui bench lock clean team-server team-server-stop

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Create .venv from requirements.lock (exact versions) and install the project.

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON_FOR_VENV) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

repro: setup ## Run the pipeline (fetch, prepare, train, evaluate); only what changed re-runs.
	dvc repro
	dvc metrics show

experiments: setup ## The DVC experiments table: params and metrics, not code hashes or tune's search space.
	dvc exp show --drop '.*/|tune\.'

test: setup ## Run the whole test suite, slow end-to-end tests included (as CI does).
	python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: setup ## Run only the fast unit tests.
	python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

lint: setup ## Check style and import order with ruff.
	ruff check .

ui: setup ## Open the MLflow UI for this repository's runs on http://127.0.0.1:5000.
	mnist-pipeline ui

bench: setup ## Time what users run (the chapter's script vs the pipeline, sweep, tune, team, portable); docs/performance.md.
	python -m benchmarks.run

team-server: setup ## Start a local team stack (PostgreSQL + MLflow with logins) in .team/, in the background; TLS=1 puts nginx in front.
	python -m team.local_stack --state-dir $(TEAM_STATE_DIR) start --port $(TEAM_PORT) $(if $(TLS),--tls --tls-port $(TEAM_TLS_PORT))

team-server-stop: setup ## Stop the local team stack (its runs and users stay in .team/).
	python -m team.local_stack --state-dir $(TEAM_STATE_DIR) stop

lock: ## Re-resolve dependencies from pyproject.toml into requirements.lock.
	rm -rf .lock-venv && $(PYTHON_FOR_VENV) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Exact versions of every package, tested together on CPython 3.11 (x86_64)."; \
	  echo "# Regenerate with 'make lock' after changing dependencies in pyproject.toml."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable \
	    | grep -v -iE '^(pip|setuptools|mnist-pipeline)=='; } > requirements.lock
	rm -rf .lock-venv

clean: ## Remove the environment and Python caches (not data, models or runs).
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
