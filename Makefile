# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
# python3.11 when it is on PATH (the package needs 3.11 or newer), else python3; checked before the venv is made.
PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.attnlab-installed

.PHONY: demo test test-slow test-all test-notebooks lint bench setup browser clean

setup: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || \
		{ echo "make: attnlab needs Python 3.11 or newer, and '$(PYTHON)' is not; run: make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: here pip takes the local CPU wheel; the package's own "torch>=2.2" is then
# already satisfied, so nothing pulls a CUDA build. Elsewhere PyPI's torch is a CUDA build of several GB:
# make TORCH_INDEX=https://download.pytorch.org/whl/cpu takes PyTorch's CPU build instead.
# Re-runs only when pyproject.toml changes.
TORCH_INDEX ?=
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --disable-pip-version-check -q -e ".[all]"
	touch $@

demo: $(STAMP)
	$(BIN)/attnlab demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

# The fast default run: every test except the slow (convergence/quality), benchmark and notebook ones (pyproject.toml).
test: $(STAMP) lint
	$(BIN)/python -m pytest

# Only the slow tests: models that must learn their task, the demo on its full recipe (a later -m replaces addopts').
test-slow: setup
	$(BIN)/python -m pytest -m slow

# make test and make test-slow in one pytest run (everything but the benchmarks and the notebooks).
test-all: $(STAMP) lint
	$(BIN)/python -m pytest -m "not benchmark and not notebooks"

# The tutorial notebooks, executed headless in fast mode (see notebooks/README.md; about 80 s on 2 idle cores).
test-notebooks: setup
	ATTNLAB_NOTEBOOK_FAST=1 $(BIN)/python -m pytest -m notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/attention.py

# Headless Chromium for the viewer's browser test (Debian package; needs root or sudo).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
