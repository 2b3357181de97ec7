# Every target builds and uses its own virtual environment, so a fresh machine
# needs nothing but python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all demo test lint proto bench bench-quick fuzz soak clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(VENV)/.bench

demo: $(STAMP)
	$(BIN)/audio-sidecar demo

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
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
