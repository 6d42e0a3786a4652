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
FINN_PLUS := finn-plus==1.6.1

.PHONY: setup demo test test-all train shipped-checkpoint shipped-checkpoint-256 ablation bench bitstream clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	# FINN (finn-plus) pins brevitas 0.13.0, onnx 1.21, numpy 2.4, which pip cannot resolve beside
	# torch 2.13; its transformations run on the locked set, so it goes in without its pins
	$(PY) -m pip install --quiet --no-deps $(FINN_PLUS)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(PY) -m sw.flows.cli demo --backend $(or $(BACKEND),sim) $(DEMO_ARGS)

train: $(STAMP)
	$(PY) -m models.train --config $(or $(CONFIG),small) $(TRAIN_ARGS)

# the committed checkpoint: 300 float epochs in three legs (100 at lr 2e-3, then 80 and 120 at
# lr 1e-3, each leg a fresh cosine schedule from the last leg's float weights; the stride-4-less
# "upsampled" head), then 80 float epochs with the dw3x3 stride-4 head warm-started from them
# (warmup + cosine, EMA), then 8 W4A8 epochs with an EMA of the W4A8 weights and activation
# scales (decay 0.996, ramp 20 iterations); about 3.3 hours on one CPU thread
# (models/checkpoints/README.md)
SHIPPED_TRAIN := $(PY) -m models.train --config small --decoder-form rounded --epochs 3 --batch-size 32 --threads 1
SHIPPED_S4 := $(PY) -m models.train --config small --decoder-form rounded --head-form dw3x3 --batch-size 32 --threads 1
shipped-checkpoint: $(STAMP)
	$(SHIPPED_TRAIN) --float-epochs 100 --lr 2e-3 --seed 0 --out runs/long2
	$(SHIPPED_TRAIN) --init runs/long2/float.pt --float-epochs 80 --lr 1e-3 --seed 1 --out runs/long3
	$(SHIPPED_TRAIN) --init runs/long3/float.pt --float-epochs 120 --lr 1e-3 --seed 2 --out runs/long4
	$(SHIPPED_S4) --init runs/long4/float.pt --float-epochs 80 --epochs 3 --lr 1e-3 --warmup-epochs 2 \
	    --ema 0.999 --eval-every 10 --seed 3 --out runs/s4head
	$(SHIPPED_S4) --init runs/s4head/float.pt --epochs 8 --qat-lr 2.5e-4 --qat-ema 0.996 \
	    --ema-ramp 20 --eval-every 2 --seed 3 --out runs/qat_ema_b
	cp runs/qat_ema_b/final.pt models/checkpoints/small_w4a8.pt
	cp runs/s4head/float.pt models/checkpoints/small_float.pt
	$(MAKE) shipped-checkpoint-256

# the shipped 256x256 detector: the small weights fine-tuned at 256x256 input, 30 + 40 + 40 float
# epochs (three cosine legs at lr 1e-3 with EMA), then 8 W4A8 epochs; about 2 hours on two CPU threads
SHIPPED_256 := $(PY) -m models.train --config small256 --decoder-form rounded --head-form dw3x3 \
	--batch-size 32 --threads 2 --lr 1e-3 --warmup-epochs 1 --ema 0.999 --qat-lr 2.5e-4 \
	--qat-ema 0.996 --ema-ramp 20
shipped-checkpoint-256: $(STAMP)
	$(SHIPPED_256) --init models/checkpoints/small_float.pt --float-epochs 30 --epochs 6 \
	    --eval-every 5 --seed 3 --out runs/s256
	$(SHIPPED_256) --init runs/s256/float.pt --float-epochs 40 --epochs 8 --eval-every 10 \
	    --seed 4 --out runs/s256b
	$(SHIPPED_256) --init runs/s256b/float.pt --float-epochs 40 --epochs 8 --eval-every 10 \
	    --seed 6 --out runs/s256c
	$(PY) -c 'from models.detector import strip_checkpoint as s; s("runs/s256c/last.pt", "models/checkpoints/small256_w4a8.pt")'
	cp runs/s256c/float.pt models/checkpoints/small256_float.pt
	$(PY) -m models.learning_curve runs/s256b:float runs/s256c \
	    --title "small256 legs 2-3: 40 + 40 float epochs (EMA val), then 8 W4A8 epochs" \
	    --out docs/img/small256_learning_curve.png

ablation: $(STAMP)
	$(PY) -m models.ablation --config $(or $(CONFIG),small) $(ABLATION_ARGS)

bitstream: $(STAMP)
	$(PY) -m sw.flows.cli bitstream --board $(or $(BOARD),ultra96v2) $(BITSTREAM_ARGS)

bench: $(STAMP)
	$(PY) -m sw.flows.bench $(BENCH_ARGS)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n $(JOBS) $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -n $(JOBS) $(PYTEST_ARGS)

clean:
	rm -rf build bench/out .pytest_cache
