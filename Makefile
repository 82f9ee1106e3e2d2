# Two commands: `make demo` and `make test`. Each sets up a fresh machine idempotently
# (Debian packages when root, .venv, pip install), then runs the pipeline or the tests.
# A second run skips the set-up work already done.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# chromium + chromium-driver: the web app's browser tests (Selenium drives Debian's own
# browser by path; nothing downloads one).
APT_PACKAGES := ffmpeg espeak-ng openssh-server openssh-client chromium chromium-driver
PORT ?= 8000
PYTEST_ARGS ?=
# Parallel test workers (pytest-xdist); a module's tests stay in one worker (its fixtures are
# built once; the workflow tests are two modules, each with its own reference run).
# The workers use the cores: one torch / OpenMP thread each (a second one only contends).
TEST_WORKERS ?= auto
# Stages in dvc.yaml call `python -m stages.X`: make it the venv's python.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test serve setup system lint bench clean-venv

demo: setup
	$(BIN)/dvc repro
	$(BIN)/dvc status
	@echo "Report: data/evaluate/report.md (metrics: dvc metrics show)"

test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The web app over the models `make demo` trained: http://127.0.0.1:$(PORT)/
serve: setup
	$(BIN)/python -m stages.serve --port $(PORT)

setup: system $(STAMP)

# Debian packages: installed when missing and we are root; otherwise say what is missing.
system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Missing Debian packages: $$missing (run: sudo apt-get install $$missing)"; exit 1; \
	  fi; \
	fi

# The venv is rebuilt only when pyproject.toml changes. torch is pinned to the local CPU build;
# [tool.voice2face] no-deps lists packages installed without their declared dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $$($(BIN)/python -c "import tomllib; \
	  print(*tomllib.load(open('pyproject.toml', 'rb'))['tool']['voice2face']['no-deps'])")
	$(BIN)/python -c "import torch, dlib, av, resemblyzer; assert not torch.version.cuda, 'CUDA torch resolved'"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
