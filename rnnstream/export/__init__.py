"""Export PyTorch recurrent models to streamable ONNX (needs the ``export`` extra: torch, onnx)."""

from rnnstream.export.exporter import ExportReport, InputSpec, export, to_onnx, verify
from rnnstream.export.parity import measure_parity

__all__ = ["ExportReport", "InputSpec", "export", "measure_parity", "to_onnx", "verify"]
