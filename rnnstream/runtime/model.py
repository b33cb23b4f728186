"""Loading a model: one onnxruntime session plus its signature, shared by all of its streams."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rnnstream.errors import InputError, ModelFileError, SignatureError
from rnnstream.runtime.discover import AxesSpec, discover_signature, guessed_constants
from rnnstream.runtime.dtypes import numpy_dtype
from rnnstream.runtime.layout import InputLayout, OutputLayout, as_array
from rnnstream.runtime.pool import StreamPool
from rnnstream.runtime.runner import Runner, SessionOpener
from rnnstream.runtime.signature import METADATA_KEY, Signature
from rnnstream.runtime.stream import Stream
from rnnstream.runtime.validate import check_signature

__all__ = ["Model", "load"]

log = logging.getLogger(__name__)

# onnxruntime's refusal of a graph whose types it has no kernel for (a bfloat16 LSTM on CPU)
_NO_KERNEL_TYPE = re.compile(
    r"Type 'tensor\((\w+)\)' of (?:input|output) parameter \((.*?)\) of operator \((\w+)\)"
)


def session_options(
    threads: int, optimized_cache: str | None = None, pinned: Mapping[str, int] | None = None
) -> ort.SessionOptions:
    """Options for low-latency streaming on a small CPU; ``pinned`` fixes free dimensions by
    name (``{"batch": 1, "time": 1}``)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 4  # a failed run is raised as one InputError, not also logged
    if optimized_cache:
        opts.optimized_model_filepath = optimized_cache
    for name, size in (pinned or {}).items():
        opts.add_free_dimension_override_by_name(name, size)
    return opts


def _session_opener(source: str | bytes, threads: int, providers: list[str]) -> SessionOpener:
    """Loads ``source`` again with dimensions pinned (never into the optimized-model cache,
    which holds the general graph). A file changed since it was loaded is refused."""
    stamp = _file_stamp(source)

    def open_session(pinned: Mapping[str, int]) -> ort.InferenceSession:
        if _file_stamp(source) != stamp:
            raise ModelFileError(f"{source} changed since it was loaded")
        return ort.InferenceSession(
            source, session_options(threads, pinned=pinned), providers=providers
        )

    return open_session


def _file_stamp(source: str | bytes) -> tuple[int, int] | None:
    """The size and modification time of a model file (None for bytes, or a file now gone)."""
    if isinstance(source, bytes):
        return None
    try:
        stat = os.stat(source)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


class Model:
    """An ONNX recurrent model ready to stream; :meth:`stream` and :meth:`pool` make streams.

    Its :class:`Runner` (``model.runner``) owns the onnxruntime session; streams made here share it
    (and, for their single steps, a session pinned to their number of rows, made by
    ``open_session``: see :mod:`rnnstream.runtime.runner`).
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        signature: Signature,
        name: str,
        constants: Mapping[str, np.ndarray] | None = None,
        open_session: SessionOpener | None = None,
    ) -> None:
        self.runner = Runner(session, signature, name, constants or {}, open_session)
        self.signature = signature
        self.name = name

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime session (shared by every stream of this model)."""
        return self.runner.session

    @property
    def constants(self) -> dict[str, np.ndarray]:
        """Extra inputs pinned at load (``load(..., constants=...)``), by input name."""
        return self.runner.constants

    def stream(self, batch: int | None = None, check_finite: bool = True) -> Stream:
        """A new stream starting from the zero state.

        With ``batch=None`` the stream is one sequence: ``step`` takes one frame (or token id) and
        ``feed`` a ``[T, ...]`` chunk. With ``batch=B`` both take a leading batch axis. With
        ``check_finite`` (the default) NaN or infinite inputs are rejected.
        """
        return Stream(self, batch, check_finite)

    def pool(self, check_finite: bool = True) -> StreamPool:
        """Many independent streams of this model, batched into one run per tick."""
        return StreamPool(self, check_finite)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Whole sequences ``[B, T, ...]`` in one run from the zero state.

        This is how a non-streamable (e.g. bidirectional) model is used. Returns the outputs as
        ``[B, T, ...]`` and the final states in the model's layout, by name. Inputs are checked as
        a stream checks them (shape, dtype, NaN, token ids in range).
        """
        sig, runner = self.signature, self.runner
        arr = as_array(x, f"input {sig.input.name!r}")
        rows = arr.shape[0] if arr.ndim else 0
        layout = InputLayout(sig.input, num_tokens=sig.num_tokens)
        x = layout.convert(arr, rows=rows, single=False, time=True)
        feeds = {sig.input.name: x, **runner.zero_state(rows)}
        results = dict(zip(runner.fetch_names, runner.run(feeds)))
        for spec in sig.outputs:
            results[spec.name] = OutputLayout(spec, self.name).convert(
                results[spec.name], False, step=False
            )
        return results

    def __repr__(self) -> str:
        return f"Model({self.name!r}, kind={self.signature.kind!r})"


def _source(source: str | os.PathLike | bytes) -> tuple[str | bytes, str]:
    """What onnxruntime opens (a path, so external data resolves in its folder) and a name."""
    if isinstance(source, bytes):
        return source, "<bytes>"
    if not isinstance(source, str | os.PathLike):
        raise ModelFileError(
            f"cannot load a model from {type(source).__name__} {source!r}: "
            "expected a path or the file's bytes"
        )
    path = Path(source)
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise ModelFileError(f"cannot read model file {path}: it {reason}")
    return str(path), str(path)


def _constants(
    session: ort.InferenceSession, constants: Mapping[str, object]
) -> dict[str, np.ndarray]:
    inputs = {a.name: a for a in session.get_inputs()}
    pinned = {}
    for name, value in constants.items():
        if name not in inputs:
            raise InputError(f"constant {name!r} is not an input of the model ({sorted(inputs)})")
        dtype, shape = np.dtype(numpy_dtype(inputs[name])), inputs[name].shape
        try:
            given = np.asarray(value)
            if given.dtype.kind not in "biuf" or (given.dtype.kind == "b") != (dtype.kind == "b"):
                raise TypeError(f"got {type(value).__name__} {value!r}")
            with np.errstate(invalid="ignore", over="ignore"):
                cast = given.astype(dtype)
            if dtype.kind in "iu" and not np.array_equal(cast, given):  # 16000.5, 2**40 in int32
                raise ValueError(f"got {value!r}, which {dtype} cannot hold exactly")
            if dtype.kind == "f" and not np.isfinite(cast).all():
                raise ValueError(f"got {value!r}, not a finite {dtype}")
            if cast.ndim != len(shape):
                cast = cast.reshape([d if isinstance(d, int) else 1 for d in shape])
        except (ValueError, TypeError) as e:
            raise InputError(f"constant {name!r}: not a {dtype} of shape {shape}: {e}") from None
        pinned[name] = cast
    return pinned


def load(
    source: str | os.PathLike | bytes,
    threads: int = 1,
    providers: list[str] | None = None,
    state_map: Mapping[str, str] | None = None,
    constants: Mapping[str, object] | None = None,
    optimized_cache: str | os.PathLike | None = None,
    axes: AxesSpec | None = None,
    pin_steps: bool = True,
) -> Model:
    """Load an ONNX model (a path, or the file's bytes) for streaming.

    The signature comes from the file's rnnstream metadata when present; otherwise state pairs
    are found from names and shapes, or taken from ``state_map`` (``{"state": "stateN"}``).
    Without a signature the input's batch, time and frame axes are decided by running the model
    a few times (names break ties); ``axes={"batch": None, "time": 0}`` overrides (``frame``
    takes a list), and like ``state_map`` sets any file metadata aside. Either way the signature
    is checked against the graph: a contradiction is a :class:`SignatureError` naming the field
    and the file.
    ``constants`` pins extra inputs (``{"sr": 16000}``); without a signature, a sample rate
    left out is pinned to 16000 and recorded as a guess (``signature.source["guessed"]``), and
    any other scalar input left out is a :class:`SignatureError` naming it.
    ``optimized_cache`` names a file where onnxruntime saves the optimised graph. Weights stored
    as external data load from the model's folder; a reference that leaves the folder is refused
    (onnxruntime >= 1.25 validates the paths, for files and for bytes alike).
    With ``pin_steps`` (the default) a stream's single steps run on a second session of the same
    file with its shapes pinned to the stream's rows (faster; made at the first ``stream()`` of
    that many rows, one per rows value for up to 8 values, a few ms and about the weights' size in
    memory each: :mod:`rnnstream.runtime.runner`); ``pin_steps=False`` keeps one session for
    everything.
    """
    model_source, name = _source(source)
    opts = session_options(threads, str(optimized_cache) if optimized_cache else None)
    providers = providers or ["CPUExecutionProvider"]
    open_session = _session_opener(model_source, threads, providers) if pin_steps else None
    try:
        session = ort.InferenceSession(model_source, opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kernel = _NO_KERNEL_TYPE.search(first_line)
        if kernel:
            dtype, tensor, op = kernel.groups()
            raise ModelFileError(
                f"{name}: onnxruntime has no {op} kernel taking {dtype} (tensor {tensor!r}); "
                "export the model in float32 (or float16)"
            ) from e
        raise ModelFileError(f"{name} is not a loadable ONNX model: {first_line}") from e
    meta = session.get_modelmeta().custom_metadata_map
    pinned = _constants(session, constants or {})
    try:
        if METADATA_KEY in meta and not state_map and not axes:
            signature = Signature.from_json(meta[METADATA_KEY])
        else:
            guessed = guessed_constants(session, pinned)
            pinned.update(guessed)
            signature = discover_signature(session, state_map, pinned, axes, guessed)
            log.info("%s: no rnnstream signature; discovered %s", name, signature.source)
        check_signature(signature, session, pinned)
    except SignatureError as e:
        raise SignatureError(f"{name}: {e}") from e
    return Model(session, signature, name, pinned, open_session)
