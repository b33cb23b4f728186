"""Serving many streams: sequences by id over a StreamPool, and Triton model repositories.

Importing this package needs only the runtime (numpy, onnxruntime); the ``_ort`` model of a
Triton repository also needs onnx (the ``export`` extra), imported only when written.
"""

from rnnstream.serve.sequences import PooledSequences, StepRequest
from rnnstream.serve.triton import TritonRepository, write_triton_repository
from rnnstream.serve.triton_config import Batching

__all__ = [
    "Batching",
    "PooledSequences",
    "StepRequest",
    "TritonRepository",
    "write_triton_repository",
]
