# One command each: `make demo` runs the demo sweep, `make test` runs the tests.
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUTPUT ?= runs/demo

.PHONY: demo test test-slow lint format clean

$(BIN)/ecomtrain: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel where one is available, else PyPI's default build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/ecomtrain
	$(BIN)/python -m ecomtrain.sweep --output $(OUTPUT)

test: $(BIN)/ecomtrain
	$(BIN)/python -m pytest -q -m "not gpu and not slow"

test-slow: $(BIN)/ecomtrain
	$(BIN)/python -m pytest -q -m "slow and not gpu"

lint: $(BIN)/ecomtrain
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(BIN)/ecomtrain
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache
