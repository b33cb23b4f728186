"""The sizes a single step fixes, by the names the file gives its free dimensions.

A step of ``rows`` sequences feeds tensors whose every size is known before it runs: the input's
batch axis holds ``rows`` and its time axis 1, each state is ``[..., rows, ...]``, each frame
count ``[rows]`` or ``[]``, each constant its own shape. onnxruntime can be told such sizes when
it loads a graph (``SessionOptions.add_free_dimension_override_by_name``), by dimension name:
``batch``/``time`` in rnnstream's files, ``N``/``seq_len``/``batch_size``/``s0`` in others. With
the shapes known it folds shape arithmetic away, e.g. the step path's ``If(time == 1)``, whose
step branch it then inlines into the main graph (:mod:`rnnstream.export.step_path`).

A name can only be pinned when it means one size: a free dimension without a name, or a name
given to two axes that hold different sizes in a step (batch and time both ``s0``; the batch
and a frame axis of free size), leaves nothing safe to pin, and :func:`step_dims` says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from rnnstream.runtime.signature import Signature

__all__ = ["step_dims"]

# A size per axis of one fed tensor in a step; None where it is only known per call (a free
# frame size).
StepShape = Sequence[int | None]


def step_dims(
    inputs: Iterable[ort.NodeArg],
    signature: Signature,
    constants: Mapping[str, np.ndarray],
    rows: int,
) -> dict[str, int] | None:
    """``{dimension name: size}`` for single steps of ``rows`` sequences of a session with
    ``inputs``, or None when the step's free dimensions cannot all be pinned by name (or the
    graph has none)."""
    declared = {arg.name: arg.shape for arg in inputs}
    dims: dict[str, int] = {}
    unknown: set[str] = set()
    for name, sizes in _step_shapes(signature, constants, rows).items():
        for dim, size in zip(declared[name], sizes):
            if isinstance(dim, int):
                continue
            if not dim:  # a free dimension without a name: onnxruntime cannot be told its size
                if size is not None:
                    return None
            elif size is None:
                unknown.add(dim)
            elif dims.setdefault(dim, size) != size:
                return None
    if unknown & dims.keys():
        return None
    return dims or None


def _step_shapes(
    signature: Signature, constants: Mapping[str, np.ndarray], rows: int
) -> dict[str, StepShape]:
    """Every tensor a step feeds, by input name: its sizes in a step of ``rows`` sequences."""
    x = signature.input
    rows_fed = 1 if x.batch_axis is None else rows
    sizes = {x.batch_axis: rows_fed, x.time_axis: 1}
    shapes: dict[str, StepShape] = {
        x.name: [
            sizes.get(axis, d if isinstance(d, int) else None) for axis, d in enumerate(x.shape)
        ]
    }
    shapes.update({s.input: s.concrete_shape(rows) for s in signature.states})
    shapes.update({s.name: [rows_fed] * len(s.shape) for s in signature.lengths})
    shapes.update({name: value.shape for name, value in constants.items()})
    return shapes
