# Everything a user or CI needs. The environment is built on first use and
# rebuilt when requirements.lock or pyproject.toml change.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env run test test-fast lint ui bench bench-pipeline params clean

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

## dvc repro with the default config (experiment=tutorial) on MNIST
run: $(STAMP)
	dvc repro

## the whole test suite (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest

## unit tests only
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow"

## training speed: Lightning vs a hand-written loop, matmul peak, data wait, stage start-up
## (a few minutes on a CPU; results in bench-results/). e.g. make bench BENCH_ARGS="--threads 1"
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

## pipeline overhead: a fresh `dvc repro` vs its training time, and a no-op `dvc repro` (temp copy)
bench-pipeline: $(STAMP)
	$(BIN)/python benchmarks/pipeline.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

## rewrite params.yaml from conf/ (what `dvc exp run` does); e.g. make params ARGS="model.latent_dim=64"
params: $(STAMP)
	$(BIN)/python -m aeflow.config $(ARGS)

## hyperparameter search on Optuna (README "Hyperparameter search"); run it again to resume, or in
## several shells to share the trials. e.g. make search SPACE=conf/search/hinton2006.yaml SEARCH_ARGS="--n-trials 20"
SPACE ?= conf/search/tutorial.yaml
.PHONY: search
search: $(STAMP)
	$(BIN)/aeflow search $(SPACE) $(SEARCH_ARGS)

## rebuild an MLflow run from its id and compare its test metrics (README "Reproducing a run");
## e.g. make reproduce RUN=<run id> ARGS="--rtol 1e-4"
.PHONY: reproduce
reproduce: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make reproduce RUN=<MLflow run id> [ARGS=...]"; exit 2; }
	$(BIN)/aeflow reproduce $(RUN) $(ARGS)

## the MLflow UI over the project's store, on 127.0.0.1 only
ui: $(STAMP)
	$(BIN)/mlflow ui --host $(UI_HOST) --port $(UI_PORT) \
	  --backend-store-uri sqlite:///$(abspath mlflow.db) --default-artifact-root $(abspath mlartifacts)

clean:
	rm -rf .pytest_cache .ruff_cache
