# Two entry points: `make test` and `make demo`. Both set up the environment first
# (tools/setup_env.sh: .venv, torch, mmcv built once per machine and cached, the package).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# unit tests only (no subprocess or end-to-end runs): under a minute
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

clean:
	rm -rf work_dirs .pytest_cache
