"""rnnstream: stateful LSTM/GRU/RNN models from PyTorch to ONNX, streamed step by step.

Importing this package never imports torch; the exporter lives in ``rnnstream.export``.
"""

from rnnstream.errors import (
    CheckpointError,
    ExportError,
    InputError,
    ModelFileError,
    ParityError,
    RnnStreamError,
    SignatureError,
)
from rnnstream.runtime import Model, Signature, Stream, Vocabulary, load

__all__ = [
    "CheckpointError",
    "ExportError",
    "InputError",
    "Model",
    "ModelFileError",
    "ParityError",
    "RnnStreamError",
    "Signature",
    "SignatureError",
    "Stream",
    "Vocabulary",
    "load",
]
__version__ = "0.1.0"
