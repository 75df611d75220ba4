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

# SST-2 (GLUE layout) for the demo's downstream task, where the checkout has it beside it.
SST2 ?= ../shared/data/sst2
DEMO_EVALUATION ?= $(if $(wildcard $(SST2)/train.tsv),--task $(SST2)) --max-train-examples 2000

# Every stage on the built-in corpus, then the lineage of the evaluation they made.
demo: $(STAMP)
	@corpus=$$($(BIN)/bertflow ingest demo --json | $(ID)) && \
	tokenizer=$$($(BIN)/bertflow tokenizer --corpus $$corpus --json | $(ID)) && \
	shards=$$($(BIN)/bertflow shard --corpus $$corpus --tokenizer $$tokenizer --json | $(ID)) && \
	model=$$($(BIN)/bertflow pretrain --shards $$shards $(DEMO_TRAINING) --json | $(ID)) && \
	evaluation=$$($(BIN)/bertflow evaluate --model $$model $(DEMO_EVALUATION) --json | $(ID)) && \
	echo && $(BIN)/bertflow lineage $$evaluation && \
	echo && $(BIN)/bertflow evaluate --show $$evaluation && \
	echo && echo "artifacts are in $${BERTFLOW_STORE:-~/.bertflow/store}; report: .venv/bin/bertflow artifacts show $$evaluation" && \
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
