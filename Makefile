# Two commands on a fresh machine: `make demo` and `make test` (each installs first).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install dev data demo test test-fast bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# constraints.txt pins the CPU torch wheel (unpinned, pip would fetch a multi-GB CUDA build) and Ray.
# No pip cache: nothing is written to the user's home (the test suite is checked to leave it untouched).
PIP_INSTALL := $(BIN)/pip install -q --no-cache-dir -c constraints.txt

# what a user needs to run rayflow
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

# and what its tests need (pytest, a local S3 server, MLflow)
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

# Fashion-MNIST comes from Debian (offline, no download at run time). Non-root users: sudo, or
# set RAYFLOW_DATA_DIR to a folder holding the four IDX .gz files.
data:
	@if [ -n "$$RAYFLOW_DATA_DIR" ] || [ -f $(DATA_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST present"; \
	else \
		$(SUDO) apt-get install -y dataset-fashion-mnist || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist); \
	fi

# Chair meshes for `data.name: chairs` (RC-49-like yaw regression): Debian's Sweet Home 3D furniture,
# 120 MB, offline. The CC0 archive is the default source; every model's licence goes into the rendered
# set's metadata. Non-root users: sudo, or set RAYFLOW_FURNITURE_DIR to a folder holding the .sh3f files.
.PHONY: chairs-data demo-regression
chairs-data:
	@if [ -n "$$RAYFLOW_FURNITURE_DIR" ] || [ -f /usr/share/sweethome3d/furniture/BlendSwap-CC-0.sh3f ]; then \
		echo "sweethome3d-furniture present"; \
	else \
		$(SUDO) apt-get install -y sweethome3d-furniture || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y sweethome3d-furniture); \
	fi

demo: install data
	$(BIN)/rayflow demo

# the regression pipeline (rotated Fashion-MNIST, angle labels, MAE in degrees), ~15 min on 2 cores
demo-regression: install data
	$(BIN)/rayflow run --config regression_demo

# --durations=15: the slowest tests, so the suite's time budget is watched on every run.
# TEST_WORKERS=N (default 1): N pytest workers (xdist), a test module never split between them, modules in
# conftest's order (the long Ray ones first). On 2 cores two workers gained nothing (30 min vs ~27-30
# serial, docs/results.md): the Ray end-to-end tests are CPU-bound there; on more cores they overlap.
TEST_WORKERS ?= 1
test: dev data
	$(BIN)/python -m pytest -q $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) --durations=15

test-fast: dev
	$(BIN)/python -m pytest -q -m "not slow"

# every benchmark, 3 runs each, one table of medians (benchmarks/results/latest.md); ~45 min on 2 cores
bench: dev data
	$(BIN)/python benchmarks/run_all.py --repeats 3

clean:
	rm -rf outputs .pytest_cache
