# The two commands of the README: `make demo` (the main job) and `make test`.
# Both work on a fresh machine with only python3 and make: they create .venv, put uv in it
# (uv installs the standard torch/torchaudio builds from the package index, whatever local
# wheel pip would prefer), install the pinned set from requirements.lock, then run.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench lock clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

$(STAMP): requirements.lock pyproject.toml | $(UV)
	$(UV) pip sync --python $(BIN)/python requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/contavsep demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m contavsep_platform.bench

# Re-resolve the pinned set after changing pyproject.toml (records no index URL).
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra test --python-version 3.11 --no-header --no-annotate -o requirements.lock

clean:
	rm -rf $(VENV)
