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

demo: $(STAMP)
	@mkdir -p build
	$(BIN)/rnnstream init --cell lstm --layers 2 --hidden 128 --vocab printable --seed 0 -o build/demo.safetensors
	$(BIN)/rnnstream export build/demo.safetensors -o build/demo.onnx
	$(BIN)/rnnstream info build/demo.onnx
	printf 'def main():\n    return 42\n' | $(BIN)/rnnstream stream build/demo.onnx - --max-steps 12

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

# The torch-free runtime on aarch64 under qemu user-mode emulation (needs root and a Debian host):
# the first run installs qemu-user-static, binfmt-support and debootstrap and caches an aarch64
# Debian root in .arm/ (a few minutes); every run exports the models here, streams them there
# and prints the parity table (arm/test.sh, tests/arm/).
.PHONY: test-arm clean-arm
test-arm: $(STAMP)
	bash arm/test.sh

clean-arm:
	rm -rf --one-file-system .arm

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

# The demo model at int8 and fp16 (a few minutes): parity and bpc measured against PyTorch.
.PHONY: demo-model-quantized
demo-model-quantized: $(STAMP)
	for p in int8 fp16; do \
		$(BIN)/rnnstream quantize rnnstream/assets/charlm-stdlib.onnx --$$p \
			--against rnnstream/assets/charlm-stdlib.safetensors \
			-o rnnstream/assets/charlm-stdlib.$$p.onnx || exit 1; \
	done

lint:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
