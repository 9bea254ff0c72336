# One command each: `make demo` (set up, then run the main job on a built-in default)
# and `make test` (set up, then run the tests). Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/likeness: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(BIN)/likeness

.PHONY: setup demo test lint bench
setup: $(BIN)/likeness

demo: setup
	$(BIN)/likeness demo --out demo-output

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/likeness bench
