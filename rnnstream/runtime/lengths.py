"""Frame counts: inputs such as sherpa-onnx's ``x_lens`` that the runtime fills on every call.

A model from elsewhere may take, beside its frames, how many of them each batch row holds
(``x_lens``, ``lengths``, ``seq_lens``, ``input_lengths``, ``speech_lengths``, ``ilens``): an
int32/int64 input of shape ``[rows]`` or ``[]``. It is no setting to pin and no state: its value
follows each call (1 per step, T per chunk, a window's size), so the runtime fills it with the
size of the stream input's axis it counts (``signature.lengths``, see :class:`LengthsSpec`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from rnnstream.errors import SignatureError
from rnnstream.runtime.dtypes import arg_dims, numpy_dtype
from rnnstream.runtime.probe import Fill
from rnnstream.runtime.signature import Dim, LengthsSpec, TensorSpec

__all__ = ["check_lengths", "lengths_fill", "lengths_inputs", "place_lengths"]

_LENGTH_NAMES = re.compile(r"(^|_)(i?lens|lengths?|len)$|^xlens$", re.IGNORECASE)


def lengths_inputs(
    inputs: dict[str, ort.NodeArg], pairs: Mapping[str, str], constants: Mapping[str, object]
) -> list[ort.NodeArg]:
    """Inputs that are frame counts: int32/int64, ``[rows]`` or ``[]``, named like lengths.
    Pinning one is refused: its value must follow each call's frames."""
    found = [
        arg
        for name, arg in inputs.items()
        if name not in pairs
        and _LENGTH_NAMES.search(name)
        and numpy_dtype(arg) in ("int32", "int64")
        and arg.shape is not None
        and len(arg.shape) <= 1
    ]
    for arg in found:
        if arg.name in constants:
            raise SignatureError(
                f"input {arg.name!r} ({numpy_dtype(arg)} {arg.shape}) holds the frame count of "
                "each row: the runtime fills it on every call (1 per step, T per chunk); do not "
                "pin it with constants / --const"
            )
    return found


def place_lengths(
    arg: ort.NodeArg,
    x_dims: tuple[Dim, ...],
    given: Mapping[str, object],
    name_batch: int | None,
    time_names: re.Pattern,
) -> tuple[LengthsSpec, int | None]:
    """The lengths input ``arg`` and the input axis giving its rows: the axis of the stream
    input named like its dimension (else the given batch, else an axis fixed at 1 for a count
    fixed at ``[1]``, else the batch the names give); the axis it counts
    is the given time axis, else a dynamic one named like time (``time_names``), else the first
    other axis. ``name_batch`` is the batch axis the names give."""
    dims = arg_dims(arg)
    rows: int | None = None
    if dims and isinstance(dims[0], str) and dims[0] != "?" and dims[0] in x_dims:
        rows = x_dims.index(dims[0])
    elif "batch" in given:
        rows = given["batch"]  # type: ignore[assignment]
    elif dims == (1,) and 1 in x_dims:  # exported for a batch of one: [1] beside [1, T, F]
        rows = x_dims.index(1)
    elif dims:
        rows = name_batch
    counts = given.get("time")
    if counts is None:
        others = [a for a in range(len(x_dims)) if a != rows]
        dynamic = [a for a in others if isinstance(x_dims[a], str)]
        timeish = [a for a in dynamic if time_names.search(str(x_dims[a]))]
        counts = (timeish or dynamic or others or [None])[0]
    if counts is None:
        raise SignatureError(
            f"input {arg.name!r} ({numpy_dtype(arg)} {arg.shape}) counts frames, but the stream "
            f"input {list(x_dims)} has no axis to count"
        )
    return LengthsSpec(arg.name, numpy_dtype(arg), dims, counts), rows  # type: ignore[arg-type]


def lengths_fill(lengths: list[tuple[LengthsSpec, int | None]]) -> Fill:
    """The lengths feeds for a probe's input: the counted axis's size, once per row."""

    def fill(x: np.ndarray) -> dict[str, np.ndarray]:
        return {
            spec.name: np.full(
                (x.shape[rows] if rows is not None else 1,) if spec.shape else (),
                x.shape[spec.counts],
                spec.dtype,
            )
            for spec, rows in lengths
        }

    return fill


def check_lengths(
    spec: LengthsSpec, rows: int | None, x: TensorSpec, batch: int | None, time: int | None
) -> None:
    """The lengths input's rows and count agree with the decided batch and time axes."""
    if spec.shape and batch is not None and rows != batch:
        raise SignatureError(
            f"lengths input {spec.name!r} {list(spec.shape)}: its rows were taken from axis "
            f"{rows} of input {x.name!r} {list(x.shape)}, but the batch is axis {batch}; give "
            f"the axes (axes={{'batch': ..., 'time': ...}}, CLI: --axes batch=B,time=T)"
        )
    if time is not None and spec.counts != time:
        raise SignatureError(
            f"lengths input {spec.name!r} would count axis {spec.counts} of input {x.name!r} "
            f"{list(x.shape)}, but its time axis is {time}; give the axes (axes={{'batch': ..., "
            "'time': ...}}, CLI: --axes batch=B,time=T)"
        )
