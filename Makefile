# One entry point for the usual jobs. Every target bootstraps .venv first:
# torch, pinned, from TORCH_INDEX (by default PyTorch's CPU-only wheels: on Linux the
# torch on PyPI is a CUDA build of several GB), then this project in editable mode with
# its dev extras and the optional Ray runner (the test suite checks it against the
# local runner).
#   make install                                                  # CPU build
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu128  # a CUDA 12.8 build
#   make install TORCH_INDEX=                                     # pip's own sources only
# The index is an *extra* index: a torch that pip's configured sources already hold
# (a local wheel of the same version, say) is used as well. It applies when .venv is
# created: rm -rf .venv to switch builds.
PYTHON ?= python3
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/bbc_topic.yaml

MODEL ?= runs/bbc_topic/model

.PHONY: install train test test-slow test-all docs-check bench-topic bench-infer bench-frames lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install --quiet "$(TORCH)"  # torch's own dependencies, from pip's usual sources
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) -m train --config $(CONFIG)

# The import layers (pyproject.toml, [tool.importlinter]) first: a broken layer fails fast.
# Then every test but those marked slow (minutes each: the real packaged encoder,
# killed-and-resumed runs, torchrun and Ray, an encoder install): under 10 minutes on 2 cores.
test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not slow"

# The slow tests; CI (.ci/run) runs them after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

# Every command of README.md and docs/*.md, run in a temporary folder (bench/docs_commands.py):
# the README's five-minute tour first (trains the default config, predicts a page with
# evidence, serves and queries the model, builds the demo crawl and profiles it), then the
# other trainings and every page's commands; those marked `not run: takes about N minutes`
# only with DOCS_ARGS=--all.
docs-check: $(STAMP)
	$(PY) -m bench.docs_commands $(DOCS_ARGS)

bench-topic: $(STAMP)
	$(PY) -m bench.topic --config $(CONFIG)

# Needs a trained model at $(MODEL): `make train` (or bench-topic) first.
bench-infer: $(STAMP)
	@test -f $(MODEL)/config.json || { echo "no model at $(MODEL): run make train first (or MODEL=path)"; exit 2; }
	$(PY) -m bench.infer --model $(MODEL) --config $(CONFIG)

# Framing benchmarks (need ../shared/data or ARTICLE_DATA_DIR): SemEval English and all six
# languages (5-fold CV), GVFC (published folds); each beside the TF-IDF baselines of the same
# folds. About 12, 25 and 15 minutes on 2 CPUs; the multilingual encoder is installed first.
bench-frames: $(STAMP)
	$(VENV)/bin/article-classifier encoders install multilingual-e5-small
	$(PY) -m bench.frames --config configs/semeval_frames.yaml --cv 5
	$(PY) -m bench.frames --config configs/semeval_frames_multilingual.yaml --cv 5 --by-language
	$(PY) -m bench.frames --config configs/gvfc_frames.yaml --published-folds 0,1,2,3,4

lint: $(STAMP)
	$(VENV)/bin/ruff check model train bench tests
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf runs bench/results .pytest_cache
