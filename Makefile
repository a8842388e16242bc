# Quick start: `make run` loads the sample into capstone.db (SQLite); `make test` runs the tests.
# Each target builds its own virtual environment from pyproject.toml on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/capstone run --input data/sample_input.txt --output data/output_summary.json

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check capstone tests bench
	$(BIN)/ruff format --check capstone tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) capstone.db capstone.db-wal capstone.db-shm data/output_summary.json
