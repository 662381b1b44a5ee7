# Two commands: `make run` (the reproduction) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test test-all bench bench-gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP) $@

run: $(STAMP)
	$(BIN)/mfdyn reproduce --out results

# two pytest workers (pytest-xdist): 3m24s-4m58s for the default run on 2 cores (2026-11-23; 7m56s once, in
# a slow phase of the machine), against 9m45s in one process before the kernels of deep problems stopped
# unrolling their steps
# (whole test files per worker took 5m50s: the last files ran alone)
PYTEST := $(BIN)/python -m pytest -q -n 2

test: $(TEST_STAMP)
	$(PYTEST)

test-all: $(TEST_STAMP)
	$(PYTEST) -m ''

bench: $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/sweep_bench.py

# on a machine with a GPU and JAX's CUDA plugin (CuPy, if installed, adds the fused CUDA reference)
bench-gpu: $(TEST_STAMP)
	$(BIN)/python benchmarks/sweep_gpu_bench.py

clean:
	rm -rf $(VENV) results
