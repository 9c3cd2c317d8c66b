# dogbench: Domain Guidance vs classifier-free guidance benchmark.
# `make install` builds .venv (torch 2.14.1 + torchvision 0.29.1, then this project with its test extras).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXP    ?= default
ARGS   ?=

.PHONY: install test test-all benchmark toy perf sweep clean-results dry-run gpu-check standins

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The fast suite (CPU, a few minutes): the development loop.
test:
	$(BIN)/python -m pytest -q -m "not slow and not gpu" $(ARGS)

# Everything CI runs: the fast suite plus the slow tests (multi-process, kill-and-resume, statistics checks);
# tests marked gpu skip without CUDA.
test-all:
	$(BIN)/python -m pytest -q $(ARGS)

# Runs experiments/$(EXP).yaml end to end: `make benchmark` (the small offline CPU benchmark),
# `make benchmark EXP=paper` (the paper's seven-dataset protocol; needs the DiT/VAE/Inception/DINOv2 weights).
benchmark:
	$(BIN)/dogbench run --exp $(EXP) $(ARGS)

# An Optuna study of DoG's w on the experiment's first dataset (or DATASET=...), in results/$(EXP)/sweeps/:
# `make sweep EXP=default TRIALS=8`; watch it with optuna-dashboard (printed at start).
DATASET ?= $(shell $(BIN)/python -c "from benchmark.harness.loading import load_experiment as l; print(l('$(EXP)').dataset_names()[0])")
METHOD  ?= dog
TRIALS  ?= 8
sweep:
	$(BIN)/dogbench sweep --exp $(EXP) --dataset $(DATASET) --method $(METHOD) --total-trials $(TRIALS) $(ARGS)

toy:
	$(BIN)/dogbench toy $(ARGS)

perf:
	$(BIN)/dogbench perf $(ARGS)

# The paper's protocol (experiments/paper.yaml) end to end on stand-in weights: random weights of the real
# architectures and a few real Caltech-101 images, written once to .dryrun/ (python -m benchmark.standins), then
# `dogbench run --exp paper` with tiny overrides (scripts/dry_run.py: CPU-sized, or DiT-XL/2 at 256 with CUDA).
dry-run:
	$(BIN)/python scripts/dry_run.py --fresh $(ARGS)

# The first thing to run on a GPU machine (< 8 min on one GPU; CPU sizes without CUDA): pytest -m gpu, dogbench perf
# on DiT-XL/2 and the dry run, summarised in one JSON, results/perf/gpu-check-<device>-<time>.json.
gpu-check:
	$(BIN)/python scripts/gpu_check.py $(ARGS)

# Only the stand-in weights and data, into STANDINS (default .dryrun/standins); prints the overrides that use them.
STANDINS ?= .dryrun/standins
standins:
	$(BIN)/python -m benchmark.standins $(STANDINS) $(ARGS)
