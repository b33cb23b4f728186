"""rnnstream: stateful LSTM/GRU/RNN models from PyTorch to ONNX, streamed step by step.

Importing this package never imports torch; the exporter lives in ``rnnstream.export``.
"""

from rnnstream.errors import (
    CheckpointError,
    ExportError,
    InputError,
    ModelFileError,
    NotALanguageModelError,
    ParityError,
    RnnStreamError,
    SignatureError,
)
from rnnstream.runtime import Model, Signature, Stream, Vocabulary, load
from rnnstream.runtime.generate import Generation, generate

__all__ = [
    "CheckpointError",
    "ExportError",
    "Generation",
    "InputError",
    "Model",
    "ModelFileError",
    "NotALanguageModelError",
    "ParityError",
    "RnnStreamError",
    "Signature",
    "SignatureError",
    "Stream",
    "Vocabulary",
    "generate",
    "load",
]
__version__ = "0.1.0"
