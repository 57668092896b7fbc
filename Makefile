# One entry point for the usual jobs. Every target bootstraps .venv first:
# a CPU build of torch (pinned: an unpinned torch pulls a CUDA build of several GB),
# then this project in editable mode with its dev extras and the optional Ray engine
# (the test suite checks it against the local engine).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/bbc_topic.yaml

MODEL ?= runs/bbc_topic/model

.PHONY: install train test test-fast bench-topic bench-infer bench-frames lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev,ray]'
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

# Needs a trained model: `make train` (or bench-topic) first.
bench-infer: $(STAMP)
	$(PY) -m train.bench_infer --model $(MODEL) --config $(CONFIG)

# Framing benchmarks (need ../shared/data or ARTICLE_DATA_DIR); about an hour each on 2 CPUs.
bench-frames: $(STAMP)
	$(PY) -m train.bench_frames --config configs/semeval_frames.yaml --cv 5
	$(PY) -m train.bench_frames --config configs/gvfc_frames.yaml --published-folds 0,1,2,3,4

lint: $(STAMP)
	$(VENV)/bin/ruff check model train tests

clean:
	rm -rf runs bench/results .pytest_cache
