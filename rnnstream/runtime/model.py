"""Loading a model: one onnxruntime session plus its signature, shared by all of its streams."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rnnstream.errors import ModelFileError, SignatureError
from rnnstream.runtime.signature import METADATA_KEY, Signature
from rnnstream.runtime.stream import Stream

__all__ = ["Model", "load"]

log = logging.getLogger(__name__)


def _session_options(threads: int) -> ort.SessionOptions:
    """Options for low-latency single-stream work on a small CPU."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class Model:
    """An ONNX recurrent model ready to stream. Create streams with :meth:`stream`."""

    def __init__(self, session: ort.InferenceSession, signature: Signature, name: str) -> None:
        self.session = session
        self.signature = signature
        self.name = name
        self.output_names = [o.name for o in signature.outputs] + [
            s.output for s in signature.states
        ]

    def stream(self, batch: int | None = None) -> Stream:
        """A new stream starting from the zero state.

        With ``batch=None`` the stream is a single sequence: ``step`` takes one frame (or one token
        id) and ``feed`` a ``[T, ...]`` chunk. With ``batch=B`` both take a leading batch axis.
        """
        return Stream(self, batch)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One run over whole sequences from the zero state, ``x`` in the model's own layout.

        This is how a non-streamable (e.g. bidirectional) model is used. Returns every output,
        final states included, by name.
        """
        x = np.asarray(x, dtype=self.signature.input.dtype)
        rows = x.shape[self.signature.input.batch_axis]
        results = self.session.run(
            self.output_names, {self.signature.input.name: x, **self.zero_state(rows)}
        )
        return dict(zip(self.output_names, results))

    def zero_state(self, rows: int) -> dict[str, np.ndarray]:
        """The initial state of every state input for ``rows`` sequences."""
        return {
            s.input: np.zeros(s.concrete_shape(rows), dtype=s.dtype) for s in self.signature.states
        }

    def __repr__(self) -> str:
        return f"Model({self.name!r}, kind={self.signature.kind!r})"


def load(source: str | os.PathLike | bytes, threads: int = 1) -> Model:
    """Load an ONNX model written by ``rnnstream export`` (a path, or the file's bytes)."""
    if isinstance(source, bytes):
        name = "<bytes>"
        model_bytes = source
    else:
        path = Path(source)
        name = str(path)
        try:
            model_bytes = path.read_bytes()
        except OSError as e:
            raise ModelFileError(f"cannot read model file {name}: {e.strerror}") from e
    try:
        session = ort.InferenceSession(
            model_bytes, _session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        raise ModelFileError(f"{name} is not a loadable ONNX model: {e}") from e
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise SignatureError(
            f"{name} has no rnnstream signature (metadata key {METADATA_KEY!r}); "
            "export it with `rnnstream export`"
        )
    signature = Signature.from_json(meta[METADATA_KEY])
    log.debug("loaded %s with %d state pairs", name, len(signature.states))
    return Model(session, signature, name)
