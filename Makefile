# deflow: `make demo` runs the main job, `make test` the CI test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
# keep tool caches inside the project folder
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export YOWASP_CACHE_DIR := $(CURDIR)/.cache/yowasp
export XDG_CACHE_HOME := $(CURDIR)/.cache
export PYTHONPATH := $(CURDIR)
export MPLBACKEND := Agg
JOBS ?= $(shell nproc)

.PHONY: setup demo test test-all train ablation bench bitstream clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(PY) -m sw.cli demo --backend $(or $(BACKEND),sim) $(DEMO_ARGS)

train: $(STAMP)
	$(PY) -m models.train --config $(or $(CONFIG),small) $(TRAIN_ARGS)

ablation: $(STAMP)
	$(PY) -m models.ablation --config $(or $(CONFIG),small) $(ABLATION_ARGS)

bitstream: $(STAMP)
	$(PY) -m sw.cli bitstream --board $(or $(BOARD),ultra96v2) $(BITSTREAM_ARGS)

bench: $(STAMP)
	$(PY) -m sw.bench $(BENCH_ARGS)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n $(JOBS) $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -n $(JOBS) $(PYTEST_ARGS)

clean:
	rm -rf build bench/out .pytest_cache
