# The two commands a fresh machine needs (see README):
#   make run    set up, get or regenerate the data, run the whole pipeline (dvc repro)
#   make test   set up, run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install data run browser test test-fast lint lock clean

$(STAMP): requirements.lock pyproject.toml
	@rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

install: $(STAMP)  ## Create .venv from the lock file (once per lock change).

data: install  ## data/raw from the DVC remote, else regenerated and checked against data.dvc.
	@if dvc pull --quiet data.dvc 2>/dev/null; then echo "data/raw: pulled from the DVC remote"; \
	else \
	  echo "data/raw: not in the DVC remote, regenerating the demo corpus"; \
	  biomedclip demo-data --no-benchmark; \
	  cp data.dvc .data.dvc.recorded; \
	  dvc commit --quiet --force data.dvc; \
	  if ! cmp -s data.dvc .data.dvc.recorded; then \
	    mv .data.dvc.recorded data.dvc; \
	    echo "error: the regenerated data/raw differs from the version recorded in data.dvc." \
	         "If you changed the 'demo' params, record the new version: dvc add data/raw" >&2; \
	    exit 1; \
	  fi; \
	  rm .data.dvc.recorded; \
	  echo "data/raw: regenerated, identical to the version in data.dvc"; \
	fi

run: data  ## The main job: every pipeline stage on the embedded defaults (one Prefect server for all).
	biomedclip repro
	dvc push --quiet
	dvc status

browser:  ## Debian's Chromium for the browser tests (as root; without it they skip, saying why).
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null 2>&1)); } || \
	  echo "chromium: not installed (not root, or no package source): the browser tests will skip"

test: install browser  ## The whole test suite: unit, integration and e2e tiers, on two workers (what CI runs).
	pytest -n 2

test-fast: install  ## The unit tier: in-process tests only, no subprocess, no server.
	pytest -n 2 -m unit

lint: install
	ruff check src tests flows bench

lock:  ## Re-resolve every dependency into requirements.lock (needs the dev extra: uv).
	uv pip compile --all-extras --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --no-strip-extras --quiet --custom-compile-command "make lock" -o requirements.lock pyproject.toml

clean:  ## Remove the environment and local pipeline state (not data tracked by DVC).
	rm -rf $(VENV) .prefect .pytest_cache .ruff_cache
