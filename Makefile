# Two commands are all a newcomer needs (see README.md):
#   make lab    set everything up, then open the workbook in JupyterLab
#   make test   set everything up, then run every test (.ci/run calls exactly this)
# and one to see it all work without a browser:
#   make demo   quantize the bundled model with every mix, check against llama.cpp, compare
# Everything installs into .venv/ from pyproject.toml. Prerequisites (README.md): Python >= 3.10,
# and for llama.cpp a C/C++ compiler and CMake (PyPI has llama-cpp-python as source only).
# `make lab` installs the student set (.[lab,llama]); `make test` adds the test tools (.[test]).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BASE   := $(VENV)/.kquant-base
LAB    := $(VENV)/.kquant-lab
TESTS  := $(VENV)/.kquant-test
# Measured on 2 cores: the time the message below announces.
LLAMA_MINUTES := 10

# llama-cpp-python compiles llama.cpp from source the first time (minutes); pip caches the wheel.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 4

.PHONY: lab test lint demo bench clean oracle-nf4

# JupyterLab refuses to start as root (containers, CI boxes) unless told it may.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(LAB)
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/

# WITH_ORACLES=1 (set by .ci/run) also checks NF4 against bitsandbytes: 1.4 GB a reader need not download.
test: $(TESTS) lint
	$(BIN)/python -m pytest
	@if [ -n "$$WITH_ORACLES" ]; then $(MAKE) --no-print-directory oracle-nf4; fi

# The lint gate (config in pyproject.toml): mistakes and a stale noqa fail it, and so does unformatted code.
lint: $(TESTS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(BASE)
	$(BIN)/python -m kquant demo

# The budgets the tests do not assert (a busy machine must not fail a test): speed against
# ggml's C, whole files against llama-quantize, widget redraws, each notebook's CPU and memory.
bench: $(TESTS)
	$(BIN)/python benchmarks/codecs.py
	$(BIN)/python benchmarks/quantize_file.py
	$(BIN)/python benchmarks/widgets.py
	$(BIN)/python benchmarks/notebooks.py

# The NF4 oracle: tests/test_nf4.py against bitsandbytes itself, in a venv of its own (.venv/bnb:
# torch's CPU build and bitsandbytes, about 1.4 GB) so that `make test` downloads none of it; there
# those tests skip, here they must run (KQUANT_NF4_ORACLE=1 turns a missing bitsandbytes into a
# failure). CI runs it after `make test` (.ci/run). pip must resolve torch==2.13.0 to its CPU build:
# elsewhere add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu (PyPI's own wheel brings CUDA).
ORACLE := $(VENV)/bnb

oracle-nf4: $(ORACLE)/.kquant-oracle
	KQUANT_NF4_ORACLE=1 $(ORACLE)/bin/python -m pytest -q -p no:cacheprovider tests/test_nf4.py

$(ORACLE)/.kquant-oracle: pyproject.toml
	@echo "kquant: installing the NF4 oracle, torch (CPU) and bitsandbytes, into $(ORACLE)/ (about 3 minutes, once)"
	$(PYTHON) -m venv $(ORACLE)
	$(ORACLE)/bin/python -m pip install --quiet --upgrade pip
	$(ORACLE)/bin/python -m pip install --quiet --progress-bar off -e ".[nf4-oracle]" "pytest>=7"
	@touch $@

# kquant (editable) with its light dependencies, then llama.cpp in a pip call of its own that
# says what it does: the only step that takes minutes, announced before it starts. The pin is
# read from kquant's metadata (pyproject.toml's llama extra), its one home.
$(BASE): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "kquant needs Python 3.10 or newer: run make PYTHON=python3.11 (or newer)")'
	@echo "kquant: creating $(VENV)/ and installing kquant with numpy, matplotlib, ipywidgets and gguf (about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@version=$$($(BIN)/python -c 'from kquant import colab; print(colab.requirements()["llama-cpp-python"][2:])') && \
	if $(BIN)/python -m pip cache list llama_cpp_python 2>/dev/null | grep -q "llama_cpp_python-$$version-"; then \
		echo "kquant: installing llama.cpp (llama-cpp-python $$version) from the wheel pip built before (seconds)"; \
	else \
		echo "kquant: compiling llama.cpp (llama-cpp-python $$version), about $(LLAMA_MINUTES) minutes, once; pip caches it"; \
		echo "        (it needs a C/C++ compiler and CMake: see README.md)"; \
	fi && \
	echo "$(BIN)/python -m pip install --progress-bar off llama-cpp-python==$$version" && \
	$(BIN)/python -m pip install --progress-bar off "llama-cpp-python==$$version"
	@touch $@

# The student set: JupyterLab, with its first-run news prompt off for this workbook (jupyter/overrides.json, put in
# place by postBuild, which Binder runs too).
$(LAB): $(BASE) jupyter/overrides.json postBuild
	@echo "kquant: installing JupyterLab (about a minute)"
	$(BIN)/python -m pip install --quiet -e ".[lab]"
	PATH="$(CURDIR)/$(BIN):$$PATH" ./postBuild
	@touch $@

# The test set: the student set, the test tools and nbgrader.
$(TESTS): $(LAB)
	@echo "kquant: installing the test tools (about a minute)"
	$(BIN)/python -m pip install --quiet -e ".[lab,llama,test]"
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
