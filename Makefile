# Every target builds and uses its own virtual environment, so a fresh machine
# needs nothing but python3 (3.11 or newer) and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What running needs (`make demo`), and the development toolchain on top of it.
RUNTIME := $(VENV)/.runtime
STAMP   := $(VENV)/.installed
# The oldest Python we run on, read from pyproject's requires-python.
PY_MIN  := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\)"$$/\1/p' pyproject.toml)

# A recipe that fails leaves no half-made stamp behind.
.DELETE_ON_ERROR:

.PHONY: all demo test interop lint proto bench bench-quick fuzz soak clean

all: test

# $(call need_python,INTERPRETER,ADVICE): stop unless it is Python $(PY_MIN)+.
define need_python
@$(1) -c 'import sys; sys.exit(sys.version_info[:2] < tuple(int(n) for n in "$(PY_MIN)".split(".")))' 2>/dev/null \
	|| { echo "audio-sidecar needs Python $(PY_MIN) or newer; $(1) is $$($(1) --version 2>/dev/null || echo "not found"). $(2)" >&2; exit 1; }
endef

# Checked before .venv exists: a venv an older Python made would be reused,
# broken, by every later run.
$(VENV)/pyvenv.cfg:
	$(call need_python,$(PYTHON),Name a newer one: make $(or $(MAKECMDGOALS),test) PYTHON=python3.11)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): $(VENV)/pyvenv.cfg pyproject.toml
	$(call need_python,$(BIN)/python,$(VENV) was made by it: make clean first.)
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP): $(VENV)/pyvenv.cfg pyproject.toml
	$(call need_python,$(BIN)/python,$(VENV) was made by it: make clean first.)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Pipecat (numpy, numba, onnxruntime: a minute or two the first time).
$(VENV)/.interop: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,interop]'
	touch $(VENV)/.interop

$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(VENV)/.bench

# Only what running needs: the demo is a user's first run, not a developer's.
demo: $(RUNTIME)
	$(BIN)/audio-sidecar demo

# Every test, the Pipecat interop ones included: none may skip for a missing extra.
test: $(VENV)/.interop
	SIDECAR_REQUIRE_INTEROP=1 $(BIN)/pytest -q

# Only the dialects against a real Pipecat server.
interop: $(VENV)/.interop
	SIDECAR_REQUIRE_INTEROP=1 $(BIN)/pytest -q tests/test_interop_pipecat.py

# mypy reads the Pipecat server of the interop tests, so lint needs Pipecat's types.
lint: $(VENV)/.interop
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python -m sidecar.schema proto/schema

bench: $(VENV)/.bench
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(VENV)/.bench
	$(BIN)/python -m bench --quick

fuzz: $(STAMP)
	SIDECAR_FUZZ_EXAMPLES=100000 $(BIN)/pytest -q tests/test_fuzz.py

soak: $(STAMP)
	SIDECAR_SOAK_SECONDS=600 $(BIN)/pytest -q -s tests/test_soak.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
