# Two commands are all a newcomer needs (see README.md):
#   make lab    set everything up, then open the workbook in JupyterLab
#   make test   set everything up, then run every test (.ci/run calls exactly this)
# and one to see it all work without a browser:
#   make demo   quantize the bundled model with every mix, check against llama.cpp, compare
# Everything installs into .venv/ from pyproject.toml; only Python >= 3.10 is assumed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# llama-cpp-python compiles llama.cpp from source the first time (minutes); pip caches the wheel.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 4

.PHONY: lab test lint demo bench clean

# JupyterLab refuses to start as root (containers, CI boxes) unless told it may.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/

test: $(STAMP) lint
	$(BIN)/python -m pytest

# The lint gate (config in pyproject.toml): mistakes and a stale noqa fail it, and so does unformatted code.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	$(BIN)/python -m kquant demo

# The budgets the tests do not assert (a busy machine must not fail a test): speed against
# ggml's C, whole files against llama-quantize, widget redraws, each notebook's CPU and memory.
bench: $(STAMP)
	$(BIN)/python benchmarks/codecs.py
	$(BIN)/python benchmarks/quantize_file.py
	$(BIN)/python benchmarks/widgets.py
	$(BIN)/python benchmarks/notebooks.py

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "kquant needs Python 3.10 or newer: run make PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
