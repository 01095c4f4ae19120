# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv when missing, install torch 2.13.0 (CPU wheel) FIRST, then the package with its dev extras.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= a red cube wearing a blue hat
OUT ?= outputs/demo

.PHONY: setup demo test sync nbtest pytest bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python settings.ini setup.py
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/instant3d generate "$(PROMPT)" --out $(OUT)

# The library must be what the notebooks export: nbdev_export may not change anything git tracks.
sync: setup
	$(BIN)/nbdev_export
	@if [ -n "$$(git status --porcelain -- instant3d)" ]; then \
		echo "instant3d/ is out of sync with nbs/ (run nbdev_export and commit):"; git status --porcelain -- instant3d; exit 1; fi

nbtest: setup
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: setup
	$(BIN)/python -m pytest -q tests

test: sync nbtest pytest

bench: setup
	$(BIN)/python benchmarks/bench_generator.py

clean:
	rm -rf $(VENV) *.egg-info _proc
