# deepens — the two Quickstart commands are `make demo` and `make test`;
# each creates .venv and installs the package (CPU torch pinned) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev
TORCH  := torch==2.13.0

.PHONY: demo test bench lint clean

# the package and its runtime dependencies: all that make demo needs
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

# the test and benchmark tools on top (pytest, ruff, torchmetrics, playwright, ray)
$(DEV): $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(DEV)

demo: $(STAMP)
	$(BIN)/deepens study --quick --out runs/study --resume

test: $(DEV)
	@sh scripts/install-chromium.sh
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(DEV)
	$(BIN)/python -m benchmarks.run

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
