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

test: $(STAMP)  ## every test (GPU tests skip without CUDA)
	$(PY) -m pytest tests

bench: $(STAMP)  ## wrk sweep: Schooner vs the inline server vs the model alone (~3 min)
	$(PY) -m benchmarks.run

bench-full: $(STAMP)  ## every benchmark, one after another (~30 min); results in benchmarks/results/
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.scheduler_bench
	$(PY) -m benchmarks.selection_bench
	$(PY) -m benchmarks.metrics_overhead
	$(PY) -m benchmarks.perf_analyzer_bench --shm

lint: $(STAMP)
	$(VENV)/bin/ruff check engine ipc frontend model_procs tests benchmarks tools

sweep: $(STAMP)  ## remove shared memory left by dead instances
	$(VENV)/bin/schooner sweep

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
