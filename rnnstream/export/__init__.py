"""Export PyTorch recurrent models to streamable ONNX (needs the ``export`` extra: torch, onnx)."""

from rnnstream.export.exporter import (
    ExportReport,
    export,
    quantize_file,
    to_onnx,
    verify,
)
from rnnstream.export.layout import InputSpec
from rnnstream.export.parity import measure_parity
from rnnstream.export.quantize import PRECISIONS, quantize
from rnnstream.export.settings import EVAL_TOKENS, ParitySettings
from rnnstream.export.tolerance import TOLERANCES, Tolerance
from rnnstream.models.description import ModelDescription

__all__ = [
    "EVAL_TOKENS",
    "PRECISIONS",
    "TOLERANCES",
    "ExportReport",
    "InputSpec",
    "ModelDescription",
    "ParitySettings",
    "Tolerance",
    "export",
    "measure_parity",
    "quantize",
    "quantize_file",
    "to_onnx",
    "verify",
]
