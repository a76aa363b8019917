# deepens — the two Quickstart commands are `make demo` and `make test`;
# each creates .venv and installs the package (CPU torch pinned) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev
TORCH  := torch==2.13.0

.PHONY: demo test bench bench-peers lint clean

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

# deepens against torch-uncertainty, torchensemble and torch.func, in their own environment: torch-uncertainty
# imports torchvision, which has no CPU build beside torch 2.13 (torch 2.14.1 + torchvision 0.29.1 run on the CPU)
PEERS := .venv-peers
$(PEERS)/.installed: pyproject.toml
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PEERS)/bin/pip install --quiet -e ".[bench]"
	touch $(PEERS)/.installed

bench-peers: $(DEV) $(PEERS)/.installed
	$(BIN)/python -m benchmarks.run --only peers

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
