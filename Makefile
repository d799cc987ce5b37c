# lipspace — `make help` lists the targets. `make demo` and `make test` install everything first if needed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lipspace-installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install demo demo-lipnerf test test-slow test-all bench bench-prep bench-scoring bench-renderer bench-hashgrid bench-triplane bench-gaussian bench-codes bench-peers study-spaces study-clip-length notebooks clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first (CPU wheel here, CUDA build on GPU machines), then everything else pinned against it.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	# LSE-D/LSE-C (lipspace.eval.lse): syncnet-python lists torchvision, which must never be installed here, but never
	# imports it: install it without dependencies, then its real ones, pinned in constraints.txt.
	$(PY) -m pip install -q -c constraints.txt scenedetect python-speech-features ffmpeg-python click future
	$(PY) -m pip install -q --no-deps syncnet-python==0.2.3
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install lipspace with pinned dependencies

demo: $(STAMP)  ## synthesize a talking head, train the four conditioning spaces (tri-plane), compare them: table, chart, video
	$(VENV)/bin/lipspace-demo $(ARGS)

demo-lipnerf: $(STAMP)  ## the single-space walkthrough: LipNeRF (expression + MLP NeRF), oracle and audio drivers
	$(VENV)/bin/lipspace-demo --walkthrough $(ARGS)

test: $(STAMP)  ## run the fast test suite (not slow)
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-slow: $(STAMP)  ## run the slow suite (end-to-end, DDP)
	$(PY) -m pytest -m "slow" -q $(ARGS)

test-all: $(STAMP)  ## run both suites
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP)  ## print training throughput, preprocessing frames/s per stage (71 s clip), and the demo's wall time
	$(PY) benchmarks/bench_renderer.py $(ARGS)
	$(PY) benchmarks/bench_prep.py
	$(PY) benchmarks/bench_demo.py

bench-hashgrid: $(STAMP)  ## hash-encoding points/s fwd+bwd (2^18 points, L=16, F=2, T=2^19) vs a nerfstudio-style torch baseline
	$(PY) benchmarks/bench_hashgrid.py $(ARGS)

bench-peers: $(STAMP)  ## lipspace vs AD-NeRF's and nerfstudio's own code, one run (ARGS="--adnerf DIR --nerfstudio DIR [--quick]")
	$(PY) benchmarks/bench_peers.py $(ARGS)

bench-triplane: $(STAMP)  ## MLP vs tri-plane renderer: time to quality, training rays/s, render fps (synthetic clip)
	$(PY) benchmarks/bench_triplane.py $(ARGS)

bench-gaussian: $(STAMP)  ## MLP vs tri-plane vs Gaussian splatting: time to quality, training px/s, render fps, issue 19's CPU goal (ARGS="--quick --threads N --out F")
	$(PY) benchmarks/bench_gaussian.py $(ARGS)

bench-codes: $(STAMP)  ## sspnerf's structured 3-D codes: CPU k-d tree vs exhaustive neighbour search, fwd+bwd ms (ARGS="--tracks DIR/tracks.npz")
	$(PY) benchmarks/bench_structured_codes.py $(ARGS)

study-spaces: $(STAMP)  ## the conditioning-space sweep (experiments/conditioning_spaces): preset x renderer x 3 seeds, joblib
	OMP_NUM_THREADS=1 $(VENV)/bin/lipspace-train --config-dir experiments/conditioning_spaces --config-name sweep_synthetic $(ARGS)

study-clip-length: $(STAMP)  ## the clip-length sweep (experiments/clip_length; DATASET=anchor for the real clip): 60 runs, joblib
	OMP_NUM_THREADS=1 $(VENV)/bin/lipspace-train --config-dir experiments/clip_length --config-name sweep_$(or $(DATASET),synthetic) $(ARGS)

notebooks: $(STAMP)  ## execute the analysis notebooks on the committed results tables (into experiments/*/results/)
	cd notebooks && ../$(VENV)/bin/papermill clip_length.ipynb ../experiments/clip_length/results/clip_length_synthetic.ipynb \
	    -p results '["../experiments/clip_length/results/results_synthetic.csv"]' -p out_dir ../experiments/clip_length/results/figures
	cd notebooks && ../$(VENV)/bin/papermill clip_length.ipynb ../experiments/clip_length/results/clip_length_anchor.ipynb \
	    -p results '["../experiments/clip_length/results/results_anchor.csv"]' -p out_dir ../experiments/clip_length/results/figures_anchor
	cd notebooks && ../$(VENV)/bin/papermill real_clips.ipynb ../experiments/conditioning_spaces/results/real_clips.ipynb \
	    -p results '["../experiments/conditioning_spaces/results/results_real.csv"]' -p out_dir ../experiments/conditioning_spaces/results/figures_real

bench-prep: $(STAMP)  ## preprocessing frames/s per stage and overall on the 71 s anchor clip
	$(PY) benchmarks/bench_prep.py $(ARGS)

bench-scoring: $(STAMP)  ## seconds to score one 4 s dub at 128² per metric group (ARGS="--against REV": old vs new, interleaved)
	$(PY) benchmarks/bench_scoring.py $(ARGS)

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun logs wandb .pytest_cache
