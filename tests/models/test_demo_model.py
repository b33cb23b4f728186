"""The demo model shipped in the package: present, exported with parity, good enough, sampling."""

from __future__ import annotations

import json

import rnnstream
from rnnstream.assets import DEMO_CHECKPOINT, DEMO_ONNX
from rnnstream.models import CharLM, load_checkpoint, read_checkpoint_extra
from rnnstream.runtime.generate import generate


def test_demo_files_are_shipped_and_small():
    for path in (DEMO_ONNX, DEMO_CHECKPOINT):
        assert path.is_file(), f"{path} is missing: run `make demo-model`"
        assert path.stat().st_size < 8e6


def test_demo_checkpoint_reached_the_bpc_target():
    model = load_checkpoint(DEMO_CHECKPOINT)
    assert isinstance(model, CharLM) and model.config.cell == "lstm"
    history = read_checkpoint_extra(DEMO_CHECKPOINT)["history"]
    assert history[-1]["val_bpc"] <= 2.0, json.dumps(history[-1])


def test_demo_onnx_has_parity_and_writes_python_like_text():
    model = rnnstream.load(DEMO_ONNX)
    sig = model.signature
    parity = sig.parity
    assert sig.kind == "char_lm" and parity.passed and parity.steps >= 1000
    # The logits match to 1e-5; the LSTM cell state (values in the hundreds) to float32 precision.
    for mode in ("step", "chunk"):
        assert parity.errors[mode]["y"].max_abs_err <= 1e-5
        assert all(err.max_rel_err <= 1e-5 for err in parity.errors[mode].values())
    text = generate(model, "def ", max_tokens=300, temperature=0.5, seed=0).text
    assert "\n" in text and any(word in text for word in ("self", "return", "if ", "(", "="))
