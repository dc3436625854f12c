# Two entry points: `make test` and `make demo`. Both set up the environment first
# (tools/setup_env.sh: .venv, torch, mmcv built once per machine and cached, the package).
# mmcv comes without compiled ops unless MIXEDAE_MMCV_OPS=1 (docs/setup.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PARITY_VENV ?= .venv-mmcv-ops
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-parity test-slurm mutate demo clean

setup:
	@bash tools/setup_env.sh

# `parity` tests compare with mmcv's compiled ops, which this environment may not have;
# `slurm` tests need a Slurm test cluster (make test-slurm)
test: setup
	$(PY) -m pytest -m "not parity and not slurm" $(PYTEST_ARGS)

# unit tests only (no subprocess or end-to-end runs): about 1.5 minutes on 2 cores
test-fast: setup
	$(PY) -m pytest -m "not slow and not parity and not slurm" $(PYTEST_ARGS)

# mixedae's torchvision-backed mmcv ops against mmcv's compiled ones, and the end-to-end runs
# with compiled mmcv, in a second environment (mmcv compiled once per machine, then cached)
test-parity:
	@MIXEDAE_MMCV_OPS=1 VENV=$(PARITY_VENV) bash tools/setup_env.sh
	$(PARITY_VENV)/bin/python -m pytest -m "(parity or slow) and not slurm" $(PYTEST_ARGS)

# the Slurm launchers and preemption on a real single-node Slurm cluster that the tests bring
# up (tests/slurm/conftest.py: as root; installs Debian's Slurm and munge when missing; the
# tests are skipped, with the reason, where no cluster can be started)
test-slurm: setup
	$(PY) -m pytest tests/slurm $(PYTEST_ARGS)

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
