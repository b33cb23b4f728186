# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) --upgrade pip
	$(PIP) -e '.[export,dev]'
	touch $(STAMP)

# The shipped demo model (a character LSTM trained on Python's standard library): what it is and
# its parity record, parity re-measured against its PyTorch checkpoint, then Python-like text
# generated token by token by the torch-free runtime, with its speed.
# Then the shipped CRNN (causal convolutions + GRU, a Mackey-Glass forecaster): its convolution
# contexts listed as states, parity re-measured, and the last frames of the series streamed
# through it one at a time (each line: the predicted next value).
DEMO := rnnstream/assets/charlm-stdlib
CRNN := rnnstream/assets/crnn-mackey-glass
SERIES_TAIL := from rnnstream.train import mackey_glass; [print(f"{v:.4f}") for v in mackey_glass()[-8:, 0]]
demo: $(STAMP)
	$(BIN)/rnnstream info $(DEMO).onnx
	$(BIN)/rnnstream verify $(DEMO).onnx --against $(DEMO).safetensors
	$(BIN)/rnnstream generate $(DEMO).onnx --prompt 'def ' --max-tokens 400 --temperature 0.7 --seed 0
	$(BIN)/rnnstream info $(CRNN).onnx
	$(BIN)/rnnstream verify $(CRNN).onnx --against $(CRNN).safetensors
	$(BIN)/python -c '$(SERIES_TAIL)' | $(BIN)/rnnstream stream $(CRNN).onnx --format csv

# The suite runs on TEST_WORKERS processes (pytest-xdist), each test file whole in one of them
# (its module fixtures export once); `make test TEST_WORKERS=1` runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

# The torch-free runtime on aarch64 under qemu user-mode emulation (needs root and a Debian host):
# the first run installs qemu-user-static, binfmt-support and debootstrap and caches an aarch64
# Debian root in .arm/ (a few minutes); every run exports the models here, streams them there
# and prints the parity table (arm/test.sh, tests/arm/).
.PHONY: test-arm clean-arm
test-arm: $(STAMP)
	bash arm/test.sh

clean-arm:
	rm -rf --one-file-system .arm

# The Triton model repository (`rnnstream triton`) on a real tritonserver from the nvidia-pytriton
# wheel, in its own virtualenv under .triton/ (a few minutes the first time): configs parsed with
# Triton's schema, hundreds of concurrent gRPC sequences equal to solo streams, and the table of
# throughput, latency and batch sizes next to an in-process StreamPool (tests/triton/test.sh).
.PHONY: test-triton clean-triton
test-triton: $(STAMP)
	bash tests/triton/test.sh

clean-triton:
	rm -rf --one-file-system .triton

# Retrain and re-export the demo model shipped in rnnstream/assets (about 40 minutes on one core).
.PHONY: demo-model
demo-model: $(STAMP)
	@mkdir -p build
	$(BIN)/rnnstream train charlm --data stdlib --cell lstm --layers 2 --hidden 256 --embed 64 \
		--batch 32 --seq-len 128 --steps 6000 --lr 0.002 --min-lr 0.1 --clip 1.0 \
		--eval-every 1500 --seed 0 --threads 1 -o build/charlm-stdlib.safetensors
	cp build/charlm-stdlib.safetensors rnnstream/assets/charlm-stdlib.safetensors
	$(BIN)/rnnstream export rnnstream/assets/charlm-stdlib.safetensors \
		-o rnnstream/assets/charlm-stdlib.onnx
	$(MAKE) demo-model-quantized

# Retrain and re-export the CRNN shipped in rnnstream/assets (about a minute on one core).
.PHONY: demo-crnn-model
demo-crnn-model: $(STAMP)
	@mkdir -p build
	$(BIN)/rnnstream train crnn --data mackey-glass --cell gru --hidden 32 --conv-layers 2 \
		--conv-channels 16 --kernel 3 --steps 300 --seed 0 --threads 1 \
		-o build/crnn-mackey-glass.safetensors
	cp build/crnn-mackey-glass.safetensors rnnstream/assets/crnn-mackey-glass.safetensors
	$(BIN)/rnnstream export rnnstream/assets/crnn-mackey-glass.safetensors \
		-o rnnstream/assets/crnn-mackey-glass.onnx

# The demo model at int8, int4 and fp16 (a few minutes): parity and bpc measured against PyTorch.
.PHONY: demo-model-quantized
demo-model-quantized: $(STAMP)
	for p in int8 int4 fp16; do \
		$(BIN)/rnnstream quantize rnnstream/assets/charlm-stdlib.onnx --$$p \
			--against rnnstream/assets/charlm-stdlib.safetensors \
			-o rnnstream/assets/charlm-stdlib.$$p.onnx || exit 1; \
	done

# Benchmarks (rnnstream/bench/; not part of `make test`): per-step latency of the reference model
# (= `rnnstream bench`, about a minute), and float32 / int8 / float16 of the demo model side by side
# (several minutes; rewrites the committed rnnstream/bench/precision.json), and a soak of a million
# steps of one stream and of a 64-stream pool with joins and leaves (memory and latency per window);
# every cell kind x precision (float32, float16, int8, int4) and the demo model in one table
# (several minutes; rewrites rnnstream/bench/precisions.json).
.PHONY: bench bench-precision bench-precisions bench-soak
bench: $(STAMP)
	$(BIN)/python -m rnnstream.bench.latency

bench-precision: $(STAMP)
	$(BIN)/python -m rnnstream.bench.precision

bench-precisions: $(STAMP)
	$(BIN)/python -m rnnstream.bench.precisions

bench-soak: $(STAMP)
	$(BIN)/python -m rnnstream.bench.soak

# rnnstream against ExecuTorch (XNNPACK) and OpenVINO per step, float32 and int8, each runtime in
# its own process (rnnstream/bench/peers.py, bench/peers/). The first run builds a virtualenv per
# peer under .peers/ (torch==2.13.0 and the peer, pinned by bench/peers/constraints.txt; several
# minutes); later runs reuse them. ARGS=--quick for a short smoke run, ARGS='--json FILE'.
.PHONY: bench-peers clean-peers
bench-peers: $(STAMP)
	$(BIN)/python -m rnnstream.bench.peers $(ARGS)

clean-peers:
	rm -rf --one-file-system .peers

lint:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
