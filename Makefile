# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv when missing, install torch 2.13.0 (CPU wheel) FIRST, then the package with its dev extras.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= a red cube wearing a blue party hat
OUT ?= outputs/demo

.PHONY: setup demo test sync browser nbtest pytest bench gpu-check explorer clean

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

# Debian's chromium for tests/test_browser.py (Playwright drives it; no browser download). CI runs as root; when the
# install is not possible the browser test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "could not install chromium (needs root and Debian's archive): tests/test_browser.py will be skipped"

test: sync browser nbtest pytest

bench: setup
	$(BIN)/python benchmarks/bench_generator.py

# One prepared check for a lent GPU (under 8 minutes on an H100): the cuda tests, official generator and 256x256 render
# timings (fp32, bf16), a paper-scale training step (random-weight SD 2.1-base + CLIP ViT-L/14, no download) at the
# largest batch that fits; writes benchmarks/results/gpu_check_cuda.json and BENCHMARKS.md. `--tiny` runs it on a CPU.
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py

# The prompt explorer as a page on http://127.0.0.1:8866 (INSTANT3D_CHECKPOINT=folder for another checkpoint).
explorer: setup
	$(BIN)/voila apps/explorer.ipynb --no-browser --Voila.ip=127.0.0.1 --port 8866

clean:
	rm -rf $(VENV) *.egg-info _proc
