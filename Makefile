# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

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

ID = $(BIN)/python -c 'import json, sys; print(json.loads(sys.stdin.read().splitlines()[-1])["id"])'

# The tiny preset for a few minutes of CPU: enough for the loss to fall well below its start.
DEMO_TRAINING ?= --preset tiny --max-steps 300 --batch-size 32 --lr 1e-3 --warmup-steps 30 --val-every 100 --checkpoint-every 100

# The stages built so far, on the built-in corpus, then the lineage of what they made.
demo: $(STAMP)
	@corpus=$$($(BIN)/bertflow ingest demo --json | $(ID)) && \
	tokenizer=$$($(BIN)/bertflow tokenizer --corpus $$corpus --json | $(ID)) && \
	shards=$$($(BIN)/bertflow shard --corpus $$corpus --tokenizer $$tokenizer --json | $(ID)) && \
	model=$$($(BIN)/bertflow pretrain --shards $$shards $(DEMO_TRAINING) --json | $(ID)) && \
	echo && $(BIN)/bertflow lineage $$model && \
	echo && echo "artifacts are in $${BERTFLOW_STORE:-~/.bertflow/store}; see: .venv/bin/bertflow artifacts show $$model" && \
	echo "HuggingFace folder: .venv/bin/bertflow export $$model --out demo-bert/"

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/tokenizer.py
	$(BIN)/python bench/shard.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV)
