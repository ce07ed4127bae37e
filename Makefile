# Every target creates the virtual environment on first use, so a fresh clone needs only Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole pipeline on this machine: embedded broker, the two reference nodes, one bridge each.
run: $(STAMP)
	$(BIN)/resonance up $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

bench: $(STAMP)
	$(BIN)/python bench/relay.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
