# Quick start: `make run` (main job) and `make test` (test suite) on a fresh machine.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: setup run test lint bench

# The CPU build of torch goes in first and pinned: an unpinned torch pulls CUDA packages. Its wheel is
# taken from pip's own sources when they have it (a local wheel), else from PyTorch's CPU wheel index.
TORCH := torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

setup:
	$(PIP) install --quiet "$(TORCH)" 2>/dev/null || $(PIP) install --quiet "$(TORCH)" --extra-index-url $(TORCH_CPU_INDEX)
	$(PIP) install --quiet -c constraints.txt -e ".[train,rl,math,test]"
	# openenv-core 0.3.0 requires gradio, whose every release conflicts with the pins (pillow<13 or
	# huggingface-hub<2): install it without its deps, plus the ones its server and client import.
	$(PIP) install --quiet -c constraints.txt fastapi uvicorn websockets requests httpx fastmcp
	$(PIP) install --quiet --no-deps "openenv-core==0.3.0"

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
