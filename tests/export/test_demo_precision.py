"""The shipped demo model at int8, int4 and float16: fresh, streaming, within the tolerances."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import rnnstream
from rnnstream.assets import DEMO_FP16_ONNX, DEMO_INT4_ONNX, DEMO_INT8_ONNX, DEMO_ONNX
from rnnstream.export import TOLERANCES
from rnnstream.export.quality import char_lm_tokens, stream_bits_per_token

pytestmark = pytest.mark.skipif(
    not DEMO_ONNX.is_file(),
    reason=f"the demo model {DEMO_ONNX.name} is not built yet (make demo-model)",
)

FILES = {"int8": DEMO_INT8_ONNX, "int4": DEMO_INT4_ONNX, "float16": DEMO_FP16_ONNX}
SIZE_RATIOS = {"int8": 3.5, "int4": 6.0, "float16": 1.9}  # at least this much smaller than float32


@pytest.mark.parametrize("precision", sorted(FILES))
def test_demo_model_at_lower_precision_is_shipped_and_fresh(precision: str) -> None:
    path: Path = FILES[precision]
    assert path.is_file(), f"{path.name} is missing: run `make demo-model-quantized`"
    sig = rnnstream.load(path).signature
    assert sig.precision == precision and sig.kind == "char_lm"
    source = hashlib.sha256(DEMO_ONNX.read_bytes()).hexdigest()
    assert sig.source["quantization"]["float32_sha256"] == source, (
        f"{path.name} was made from another {DEMO_ONNX.name}: run `make demo-model-quantized`"
    )
    assert path.stat().st_size < DEMO_ONNX.stat().st_size / SIZE_RATIOS[precision]


@pytest.mark.parametrize("precision", sorted(FILES))
def test_demo_model_recorded_parity_and_bpc_are_within_tolerance(precision: str) -> None:
    parity = rnnstream.load(FILES[precision]).signature.parity
    tol = TOLERANCES[precision]
    assert parity.passed is True and parity.precision == precision
    assert parity.steps >= 1000 and parity.reference == "pytorch"
    for mode in ("step", "chunk"):
        for err in parity.errors[mode].values():
            assert err.within(tol.atol, tol.rtol), (mode, err)
    task = parity.task
    assert task.metric == "bpc" and task.data == "stdlib" and task.tokens >= 100_000
    assert task.value - task.reference <= tol.max_bpc_increase
    assert task.reference <= 2.0  # the float32 model's own quality, for scale


@pytest.mark.parametrize("precision", sorted(FILES))
def test_demo_model_bpc_remeasured_on_other_text(precision: str) -> None:
    """Torch-free: the next 20,000 validation tokens after the recorded ones, streamed."""
    fp32, lower = rnnstream.load(DEMO_ONNX), rnnstream.load(FILES[precision])
    tokens = char_lm_tokens(fp32.signature, "stdlib", 120_000)[100_000:]
    increase = stream_bits_per_token(lower, tokens) - stream_bits_per_token(fp32, tokens)
    assert increase <= TOLERANCES[precision].max_bpc_increase
    logits = lower.stream().feed(np.array([0, *tokens[:50]]))
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
