# Two entry points: `make test` and `make demo`. Both set up the environment first
# (tools/setup_env.sh: .venv, torch, mmcv built once per machine and cached, the package).
# mmcv comes without compiled ops unless MIXEDAE_MMCV_OPS=1 (docs/setup.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PARITY_VENV ?= .venv-mmcv-ops
PYTEST_ARGS ?=
# pytest-xdist workers of make test, test-fast and test-parity (the tests are independent:
# each has its own tmp_path, data and rendezvous port)
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist worksteal
# one torch thread per worker and per process it starts: two workers fill the two cores
# without oversubscribing them (PYTEST_WORKERS=0 keeps torch's default)
XDIST_THREADS := $(if $(filter 0,$(PYTEST_WORKERS)),,OMP_NUM_THREADS=1 MKL_NUM_THREADS=1)

.PHONY: setup test test-fast test-parity test-slurm env-torch211 test-torch211 wheelhouse mutate demo \
	clean

setup:
	@bash tools/setup_env.sh

# `parity` tests compare with mmcv's compiled ops, which this environment may not have;
# `slurm` tests need a Slurm test cluster (make test-slurm)
test: setup
	$(XDIST_THREADS) $(PY) -m pytest $(XDIST) -m "not parity and not slurm" $(PYTEST_ARGS)

# unit tests only (no subprocess or end-to-end runs): about 1.5 minutes on 2 cores
test-fast: setup
	$(XDIST_THREADS) $(PY) -m pytest $(XDIST) -m "not slow and not parity and not slurm" $(PYTEST_ARGS)

# mixedae's torchvision-backed mmcv ops against mmcv's compiled ones, and the end-to-end runs
# with compiled mmcv, in a second environment layered over the first (only mmcv and the
# package of its own; mmcv compiled once per machine, then cached)
test-parity: setup
	@MIXEDAE_MMCV_OPS=1 MIXEDAE_BASE_VENV=$(VENV) VENV=$(PARITY_VENV) bash tools/setup_env.sh
	$(PARITY_VENV)/bin/python -m pytest $(XDIST) -m "(parity or slow) and not slurm" $(PYTEST_ARGS)

# the Slurm launchers and preemption on a real single-node Slurm cluster that the tests bring
# up (tests/slurm/conftest.py: as root; installs Debian's Slurm and munge when missing; the
# tests are skipped, with the reason, where no cluster can be started)
test-slurm: setup
	$(PY) -m pytest tests/slurm $(PYTEST_ARGS)

# the wheels the lent GPU machine lacks (cp312, manylinux x86_64, mmcv without ops) in
# ./wheelhouse, for tools/gpu_window.sh (docs/benchmarks.md)
wheelhouse:
	@bash tools/make_wheelhouse.sh

# a second environment as on the lent GPU machine: Python 3.12, torch 2.11 (PyPI's CUDA wheel,
# run on CPU), Triton 3.6, numpy 2.5, the wheelhouse (docs/setup.md)
env-torch211:
	@bash tools/setup_torch211_env.sh

# in it: the kernels in Triton 3.6's interpreter, inductor compiling the attention and a whole
# MixedAE step with the kernel (test_topk_compile.py), and gpu_check on CPU (its
# kernel row in the interpreter too)
TORCH211_TESTS ?= tests/unit/models/test_topk_attention.py tests/unit/models/test_topk_compile.py \
	tests/unit/engine/test_layer_decay.py
test-torch211: env-torch211
	.venv-torch211/bin/python -m pytest -p no:cacheprovider $(TORCH211_TESTS) $(PYTEST_ARGS)
	TRITON_INTERPRET=1 .venv-torch211/bin/python tools/gpu_check.py --allow-cpu --scale tiny \
	    --out work_dirs/gpu_check_torch211.json

# mutation testing of the core pure modules ([tool.mutmut] in pyproject.toml; docs/testing.md):
# not part of `make test`; results stay in mutants/ (`mutmut results`, `mutmut show NAME`).
# One torch thread per test: mutmut times tests out by CPU time, which threads multiply.
mutate: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

clean:
	rm -rf work_dirs .pytest_cache mutants
