"""Files shipped with the package: the demo character LSTM, trained on the Python standard library.

``make demo-model`` rebuilds both: the checkpoint (safetensors) and its ONNX export, which
carries its parity record.
"""

from pathlib import Path

__all__ = ["DEMO_CHECKPOINT", "DEMO_ONNX"]

DEMO_CHECKPOINT = Path(__file__).parent / "charlm-stdlib.safetensors"
DEMO_ONNX = Path(__file__).parent / "charlm-stdlib.onnx"
