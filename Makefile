# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
RECIPE ?= configs/digits_cnn.yaml

.PHONY: install run test test-fast lint format serve server clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,keras]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install onnxforge with its pinned stack

run: $(STAMP)  ## run the default recipe end to end (embedded Prefect + MLflow)
	$(BIN)/onnxforge run $(RECIPE)

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## unit and config tests only (no whole-flow runs)
	$(BIN)/python -m pytest -q -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

server: $(STAMP)  ## start a Prefect server and an MLflow server in the background
	bash deployments/start_servers.sh

serve: $(STAMP)  ## serve the nightly deployment (needs `make server` and its exported URLs)
	$(BIN)/python deployments/serve.py

clean:  ## remove generated state (MLflow store, Prefect home, ONNX files)
	rm -rf .onnxforge mlruns mlartifacts mlflow.db
