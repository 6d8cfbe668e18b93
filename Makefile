# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.attnlab-installed

.PHONY: demo test lint bench setup browser clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: here pip takes the local CPU wheel; the package's own "torch>=2.2" is then
# already satisfied, so nothing pulls a CUDA build. Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q "torch==2.13.0"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[all]"
	touch $@

demo: $(STAMP)
	$(BIN)/attnlab demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/attention.py

# Headless Chromium for the viewer's browser test (Debian package; needs root or sudo).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
