# Schooner developer entry points. Each target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench bench-full lint sweep clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)  ## serve the built-in demo on http://127.0.0.1:1337
	$(VENV)/bin/schooner serve

# Every test folder: pytest ignores `testpaths` when given paths, so they are all named here.
TEST_DIRS := tests $(wildcard benchmarks tools)
LINT_DIRS := $(wildcard engine ipc frontend model_procs tests benchmarks tools)

test: $(STAMP)  ## every test (GPU tests skip without CUDA), the benchmark harness's and tools' too
	$(PY) -m pytest $(TEST_DIRS)

bench: $(STAMP)  ## wrk sweep: Schooner vs the inline server vs the model alone (~3 min)
	$(PY) -m benchmarks.run

bench-full: $(STAMP)  ## every benchmark, one after another (~30 min); results in benchmarks/results/
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.scheduler_bench
	$(PY) -m benchmarks.selection_bench
	$(PY) -m benchmarks.metrics_overhead
	$(PY) -m benchmarks.perf_analyzer_bench --shm

lint: $(STAMP)  ## ruff over every source folder that exists
	$(VENV)/bin/ruff check $(LINT_DIRS)

sweep: $(STAMP)  ## remove shared memory left by dead instances
	$(VENV)/bin/schooner sweep

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
