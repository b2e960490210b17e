# Schooner developer entry points. Each target sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PORT ?= 1337
ADMIN_PORT ?= 1338

.PHONY: run test bench bench-full lint sweep clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# serving needs only the package itself (numpy, pyarrow, uvloop, ..., scikit-learn for the demo)
$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)  ## serve the built-in demo on http://127.0.0.1:$(PORT) (make run PORT=8000 ADMIN_PORT=8001)
	$(VENV)/bin/schooner serve --port $(PORT) --admin-port $(ADMIN_PORT)

# Every test folder: pytest ignores `testpaths` when given paths, so they are all named here.
TEST_DIRS := tests $(wildcard benchmarks tools)
LINT_DIRS := $(wildcard engine ipc frontend model_procs tests benchmarks tools examples)

test: $(STAMP)  ## every test (GPU tests skip without CUDA), the benchmark harness's and tools' too
	$(PY) -m pytest $(TEST_DIRS)

# BENCH_FLAGS=--publish also rewrites benchmarks/published/<suite>.json (the README's figures).
BENCH_FLAGS ?=

bench: $(STAMP)  ## Schooner vs the inline server vs the model limit, 3 repeats (~4 min); python -m benchmarks --help lists every suite
	$(PY) -m benchmarks serving --duration 2 $(BENCH_FLAGS)

bench-full: $(STAMP)  ## every suite, one after another (~1 h); results in benchmarks/results/
	$(PY) -m benchmarks serving $(BENCH_FLAGS)
	$(PY) -m benchmarks peers $(BENCH_FLAGS)
	$(PY) -m benchmarks capacity $(BENCH_FLAGS)
	$(PY) -m benchmarks scheduler $(BENCH_FLAGS)
	$(PY) -m benchmarks selection $(BENCH_FLAGS)
	$(PY) -m benchmarks scheduler-core $(BENCH_FLAGS)
	$(PY) -m benchmarks ipc $(BENCH_FLAGS)
	$(PY) -m benchmarks perf-analyzer --shm $(BENCH_FLAGS)

lint: $(STAMP)  ## ruff over every source folder that exists
	$(VENV)/bin/ruff check $(LINT_DIRS)

sweep: $(STAMP)  ## remove shared memory left by dead instances
	$(VENV)/bin/schooner sweep

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
