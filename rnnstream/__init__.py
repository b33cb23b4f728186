"""rnnstream: stateful LSTM/GRU/RNN models from PyTorch to ONNX, streamed step by step.

Importing this package never imports torch; the exporter lives in ``rnnstream.export``.
"""

from rnnstream.errors import (
    ExportError,
    InputError,
    ModelFileError,
    ParityError,
    RnnStreamError,
    SignatureError,
)
from rnnstream.runtime import Model, Signature, Stream, load

__all__ = [
    "ExportError",
    "InputError",
    "Model",
    "ModelFileError",
    "ParityError",
    "RnnStreamError",
    "Signature",
    "SignatureError",
    "Stream",
    "load",
]
__version__ = "0.1.0"
