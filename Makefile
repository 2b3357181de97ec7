# Every target builds and uses its own virtual environment, so a fresh machine
# needs nothing but python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all demo test interop lint proto bench bench-quick fuzz soak clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Pipecat (numpy, numba, onnxruntime: a minute or two the first time).
$(VENV)/.interop: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,interop]'
	touch $(VENV)/.interop

$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(VENV)/.bench

demo: $(STAMP)
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
