"""Export PyTorch recurrent models to streamable ONNX (needs the ``export`` extra: torch, onnx)."""

from rnnstream.export.exporter import (
    ExportReport,
    InputSpec,
    export,
    quantize_file,
    to_onnx,
    verify,
)
from rnnstream.export.parity import measure_parity
from rnnstream.export.quantize import PRECISIONS, quantize
from rnnstream.export.tolerance import TOLERANCES, Tolerance

__all__ = [
    "PRECISIONS",
    "TOLERANCES",
    "ExportReport",
    "InputSpec",
    "Tolerance",
    "export",
    "measure_parity",
    "quantize",
    "quantize_file",
    "to_onnx",
    "verify",
]
