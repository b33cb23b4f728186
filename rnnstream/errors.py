"""The exception hierarchy: every error rnnstream raises on purpose is one of these."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnstream.runtime.parity_record import ParityRecord

__all__ = [
    "CheckpointError",
    "ExportError",
    "InputError",
    "ModelFileError",
    "ModelMismatchError",
    "NotALanguageModelError",
    "ParityError",
    "RnnStreamError",
    "SignatureError",
]


class RnnStreamError(Exception):
    """Base class of every error rnnstream raises on purpose."""


class SignatureError(RnnStreamError):
    """A model's signature (its state pairs, axes, dtypes) is missing, malformed or inconsistent."""


class NotALanguageModelError(SignatureError):
    """Generation was asked of a model that is not a language model (no vocabulary, other kind)."""


class ModelFileError(RnnStreamError):
    """A model file cannot be read: missing, truncated, not ONNX, or unsafe (external data)."""


class InputError(RnnStreamError):
    """An input tensor or state given to a stream has the wrong shape, dtype or values."""


class ExportError(RnnStreamError):
    """A PyTorch module cannot be exported as a streamable ONNX model."""


class ParityError(RnnStreamError):
    """The exported ONNX model does not reproduce PyTorch within tolerance."""

    def __init__(self, message: str, report: ParityRecord) -> None:
        super().__init__(message)
        self.report = report


class CheckpointError(RnnStreamError):
    """A checkpoint cannot be loaded: missing, not safetensors (pickle is refused), mismatched."""


class ModelMismatchError(RnnStreamError):
    """A PyTorch model given to compare with a file is not the model the file was exported from."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"the model is not the one exported as {file}: {reason}")
        self.file = file
        self.reason = reason
