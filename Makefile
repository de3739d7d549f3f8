# One command each: `make demo` runs the demo sweep, `make test` runs the tests.
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
# A CPU-only machine can take torch's small CPU build: make TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
VENV := .venv
BIN := $(VENV)/bin
OUTPUT ?= runs/demo

.PHONY: demo test test-slow lint format clean

$(BIN)/ecomtrain: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Every version from constraints.txt; torch first, from TORCH_INDEX_URL when it is set.
	$(BIN)/pip install -q -c constraints.txt torch $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
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
