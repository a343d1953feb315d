# Quick start: `make run` (install + the default study), `make test` (install + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install run test test-long test-fast lock pipeline clean-study ui

$(BIN)/stilts: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned in the lock and installed in the same pip call, so nothing pulls a CUDA build.
	# No bytecode here: the first process to import a module writes it (see PYTHONDONTWRITEBYTECODE below).
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -r requirements.lock -e '.[test]'
	touch $@

install: $(BIN)/stilts

# Python writes a module's bytecode the first time a process imports it, unless PYTHONDONTWRITEBYTECODE is
# set (as in many containers): then every process would compile all its imports again (13.6 s instead of 6 s
# for a cell's). Compiling the whole environment at install took 22 s on 2 cores; what a cell imports costs
# 10.5 s more once (benchmarks/import_cost.py; docs/performance.md).
unexport PYTHONDONTWRITEBYTECODE

# JOBS cells side by side on a Dask cluster of this machine's cores (127.0.0.1 only), recorded in dvc.lock as
# `dvc repro` records them: on 2 cores, 2 cells of 1 thread finish the study 1.2-1.5x sooner than one cell of
# 2 threads (benchmarks/grid_throughput.py; docs/performance.md). `dvc repro` afterwards has nothing to do.
JOBS ?= 2

run: install  ## the default study: the DVC pipeline from params.yaml, its stages JOBS at a time (1: dvc repro)
	stilts study $(if $(filter-out 1,$(JOBS)),--cluster local --jobs $(JOBS))

# The tests run in a new random order each time (pytest-randomly), its seed printed first ("Using
# --randomly-seed=N"): `make test SEED=N` repeats that order. A test past its bound fails with its name.
PYTEST = $(BIN)/python -m pytest -p randomly -p timeout $(if $(SEED),--randomly-seed=$(SEED))

test: install  ## the test suite: unit tests, tiny end-to-end dvc repro and mlflow runs, real-data tests when the data is present
	$(PYTEST) --durations=15 -m "not long" tests

test-long: install  ## the longest multi-process tests: Dask clusters on 127.0.0.1, signals to a whole study, the chaos check
	$(PYTEST) --durations=10 -m long tests

test-fast: install  ## without the end-to-end, resume, multi-process and real-data tests
	$(PYTEST) -m "not slow and not integration" tests

lock:  ## refresh requirements.lock from the current venv
	{ echo "# Exact versions of every dependency, tested together (Python 3.11, CPU torch)."; \
	  echo "# Ranges live in pyproject.toml. Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^# Editable' | sed 's/+cpu$$//'; } > requirements.lock

pipeline: install
	stilts pipeline

ui: install  ## browse the runs: the MLflow UI on 127.0.0.1:5000, opened on the study's training runs
	stilts server --open

clean-study:  ## forget the study's outputs (keeps the DVC cache)
	rm -rf data/processed models results reports mlflow.db mlflow.db-wal mlflow.db-shm
