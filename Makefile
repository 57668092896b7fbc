# One entry point for the usual jobs. Every target bootstraps .venv first:
# a CPU build of torch (pinned: an unpinned torch pulls a CUDA build of several GB),
# then this project in editable mode with its dev extras.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/bbc_topic.yaml

.PHONY: install train test test-fast bench-topic lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) -m train --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench-topic: $(STAMP)
	$(PY) -m train.bench_topic --config $(CONFIG)

lint: $(STAMP)
	$(VENV)/bin/ruff check model train tests

clean:
	rm -rf runs bench/results .pytest_cache
