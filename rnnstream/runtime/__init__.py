"""The torch-free runtime: load an exported model and stream it (numpy + onnxruntime only)."""

from rnnstream.runtime.discover import discover_signature
from rnnstream.runtime.model import Model, load
from rnnstream.runtime.pool import StreamPool
from rnnstream.runtime.signature import METADATA_KEY, Signature, StateSpec, TensorSpec
from rnnstream.runtime.stream import Stream
from rnnstream.runtime.vocab import Vocabulary

__all__ = [
    "METADATA_KEY",
    "Model",
    "Signature",
    "StateSpec",
    "Stream",
    "StreamPool",
    "TensorSpec",
    "Vocabulary",
    "discover_signature",
    "load",
]
