"""Files shipped with the package: the demo character LSTM, trained on the Python standard library.

``make demo-model`` rebuilds both: the checkpoint (safetensors) and its ONNX export, which
carries its parity record.
"""

from pathlib import Path

__all__ = ["DEMO_CHECKPOINT", "DEMO_FP16_ONNX", "DEMO_INT4_ONNX", "DEMO_INT8_ONNX", "DEMO_ONNX"]

DEMO_CHECKPOINT = Path(__file__).parent / "charlm-stdlib.safetensors"
DEMO_ONNX = Path(__file__).parent / "charlm-stdlib.onnx"
# The same model at lower precision (`rnnstream quantize`), each with its parity and bpc record.
DEMO_INT8_ONNX = Path(__file__).parent / "charlm-stdlib.int8.onnx"
DEMO_INT4_ONNX = Path(__file__).parent / "charlm-stdlib.int4.onnx"
DEMO_FP16_ONNX = Path(__file__).parent / "charlm-stdlib.fp16.onnx"
