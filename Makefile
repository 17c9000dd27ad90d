# The two commands of the README: `make demo` (the main job) and `make test`.
# Both work on a fresh machine with only python3 and make: they create .venv, put uv in it
# (uv installs the standard torch/torchaudio builds from the package index, whatever local
# wheel pip would prefer), install the pinned set from requirements.lock, then run.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench lock clean

install: $(STAMP)

# python3 -m venv needs ensurepip (Debian: python3-venv); without it, bootstrap uv with pip and
# let uv create the environment.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); $(PYTHON) -m pip install --user --quiet uv && $(PYTHON) -m uv venv --seed $(VENV); }

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

# Bytecode is compiled at install: imports stay fast where PYTHONDONTWRITEBYTECODE is set.
$(STAMP): requirements.lock pyproject.toml | $(UV)
	$(UV) pip sync --compile-bytecode --python $(BIN)/python requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/contavsep demo

# One torch/BLAS thread per process: tests start several processes (Ray workers, parallel runs)
# on small machines, where oversubscribed threads made tiny convolutions 10-20x slower.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q --durations=30

# No server, no Ray, no browser, nothing that trains a whole sequence: a few minutes on 2 cores.
# The markers are set in tests/conftest.py (server: from the fixtures a test asks for).
test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m "not slow and not server"

# ruff (lint rules, import order and the formatter's style, in pyproject.toml) and mypy over the packages
# and benchmarks (CI runs it before the tests).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix --select I .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_models
	$(BIN)/python -m benchmarks.bench_metrics

# Re-resolve the pinned set after changing pyproject.toml (records no index URL).
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra test --python-version 3.11 --no-header --no-annotate -o requirements.lock

clean:
	rm -rf $(VENV)
