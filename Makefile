# Quick start: `make run` (main job) and `make test` (test suite) on a fresh machine.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: setup run test lint bench

# The CPU build of torch goes in first and pinned: an unpinned torch pulls CUDA packages.
setup:
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[train,rl,math,test]"

run: setup
	$(PYTHON) -m backtrack_gym run

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: setup lint
	$(PYTHON) -m pytest

bench: setup
	$(PIP) install --quiet -e ".[bench]"
	$(PYTHON) bench/countdown_bench.py
