"""Files shipped with the package: the demo character LSTM, trained on the Python standard library,
and a small CRNN forecaster of the Mackey-Glass series (causal convolutions + GRU).

``make demo-model`` rebuilds the first, ``make demo-crnn-model`` the second: each a checkpoint
(safetensors) and its ONNX export, which carries its parity record.
"""

from pathlib import Path

__all__ = [
    "CRNN_CHECKPOINT",
    "CRNN_ONNX",
    "DEMO_CHECKPOINT",
    "DEMO_FP16_ONNX",
    "DEMO_INT4_ONNX",
    "DEMO_INT8_ONNX",
    "DEMO_ONNX",
]

DEMO_CHECKPOINT = Path(__file__).parent / "charlm-stdlib.safetensors"
DEMO_ONNX = Path(__file__).parent / "charlm-stdlib.onnx"
# The same model at lower precision (`rnnstream quantize`), each with its parity and bpc record.
DEMO_INT8_ONNX = Path(__file__).parent / "charlm-stdlib.int8.onnx"
DEMO_INT4_ONNX = Path(__file__).parent / "charlm-stdlib.int4.onnx"
DEMO_FP16_ONNX = Path(__file__).parent / "charlm-stdlib.fp16.onnx"
# The CRNN: its two convolutions' contexts stream as state next to the GRU's (`rnnstream info`).
CRNN_CHECKPOINT = Path(__file__).parent / "crnn-mackey-glass.safetensors"
CRNN_ONNX = Path(__file__).parent / "crnn-mackey-glass.onnx"
