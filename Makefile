# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
RECIPE ?= configs/digits_cnn.yaml
POOL ?= onnxforge-process
# Debian's Chromium for the browser test (tests/flows/test_browser.py), driven by playwright.
CHROMIUM ?= /usr/bin/chromium

.PHONY: install install-openvino bench-transformer run test test-fast lint format serve deploy worker automation server stop-server stack stop-stack clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,keras,transformers,stack]'
	touch $(STAMP)

install: $(STAMP) $(CHROMIUM)  ## create .venv, install onnxforge with its pinned stack, Chromium

# `playwright install` is never used: it downloads browser builds from a CDN; Debian's package
# is the browser the tests drive.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium

# onnxruntime-openvino installs the same `onnxruntime` module as the pinned onnxruntime: it gets
# its own venv, which benchmarks/transformer_speed.py drives in a worker process of its own.
OPENVINO_VENV ?= .venv-openvino
OPENVINO_STAMP := $(OPENVINO_VENV)/.install-stamp

$(OPENVINO_STAMP): constraints.txt
	test -x $(OPENVINO_VENV)/bin/python || $(PYTHON) -m venv $(OPENVINO_VENV)
	$(OPENVINO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OPENVINO_VENV)/bin/python -m pip install --quiet -c constraints.txt numpy onnxruntime-openvino
	touch $(OPENVINO_STAMP)

install-openvino: $(OPENVINO_STAMP)  ## a separate venv with ONNX Runtime's OpenVINO build (CPU + OpenVINO providers)

bench-transformer: $(STAMP) $(OPENVINO_STAMP)  ## BERT-small-shaped encoder: best int8 variant vs PyTorch eager
	flock /tmp/onnxforge-heavy.lock $(BIN)/python benchmarks/transformer_speed.py

run: $(STAMP)  ## run the default recipe end to end (embedded Prefect + MLflow)
	$(BIN)/onnxforge run $(RECIPE)

test: $(STAMP) $(CHROMIUM)  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## unit and config tests only: no whole-flow runs, no training, no servers
	$(BIN)/python -m pytest -q tests/unit tests/configs

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

server: $(STAMP)  ## Prefect + MLflow servers with authentication, in the background
	bash deployments/start_servers.sh

stop-server:  ## stop what `make server` started
	bash deployments/stop_servers.sh

stack: $(STAMP)  ## the team stack: Prefect + MLflow on PostgreSQL 15, auth, proxied artifacts
	BACKEND=postgres bash deployments/start_servers.sh

stop-stack:  ## stop what `make stack` started (servers, then the PostgreSQL cluster)
	bash deployments/stop_servers.sh

serve: $(STAMP)  ## serve every recipe's nightly deployment (needs `make server`'s exports)
	$(BIN)/python deployments/serve.py

deploy: $(STAMP)  ## register the same deployments on the process work pool $(POOL) (POOL_LIMIT=N: its concurrency limit, a new pool gets 2; LOCK_POOL=1: lock an open pool's job template)
	$(BIN)/python deployments/deploy.py --pool $(POOL) $(if $(POOL_LIMIT),--concurrency-limit $(POOL_LIMIT)) $(if $(LOCK_POOL),--lock-pool)

worker: $(STAMP)  ## run the work pool's flow runs from this checkout
	$(BIN)/prefect worker start --pool $(POOL)

automation: $(STAMP)  ## create the example automation: champion moved -> pull-champion
	$(BIN)/python deployments/automation.py

clean:  ## remove generated state (MLflow store, Prefect home, ONNX files)
	rm -rf .onnxforge mlruns mlartifacts mlflow.db
