# ddrm_exp — `make help` lists the targets.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: help setup test test-slow test-all run lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'

setup: ## create $(VENV) and install the project with its dev tools (no GPU, no network needed at run time)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,hf]'

test: ## the test suite, CPU only (slow tests excluded)
	$(PY) -m pytest -q -m "not slow"

test-slow: ## only the slow tests (long CLI runs, real faults; ~3 min on 2 cores)
	$(PY) -m pytest -q -m slow

test-all: ## every test, slow ones included
	$(PY) -m pytest -q

run: ## the main job on the embedded default
	$(PY) -m ddrm_exp

lint: ## ruff
	$(PY) -m ruff check ddrm_exp tests scripts

clean: ## remove outputs of runs (keeps outputs/.gitkeep)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
