# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint bench clean

# Prefect's temporary server would try to send telemetry; these machines may have no network.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: the CPU build on this machine's disk satisfies every later torch requirement.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# The whole pipeline on the built-in corpus (the demo preset: the tiny model, a few minutes on a
# CPU, fine-tuned on SST-2 when ../shared/data/sst2 is beside the checkout), ending with the
# evaluation's lineage and where to look next. PIPELINE_OPTIONS="--config my.yaml" changes it.
PIPELINE_OPTIONS ?=

demo: $(STAMP)
	$(BIN)/bertflow run --preset demo $(PIPELINE_OPTIONS)

# Everything: `gpu` tests skip themselves without CUDA. The slowest tests are listed at the end.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 tests

# Without the end-to-end tests (`slow`: a whole pipeline, served deployments, the browser).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/tokenizer.py
	$(BIN)/python bench/shard.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/integrity.py
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV)
