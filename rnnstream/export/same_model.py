"""Refuse a PyTorch model that is not the one a file was exported from, before parity runs.

Parity against another model (a checkpoint of a different size, another cell kind) fails with
errors of order one that read like a broken export; a two-step run says what is wrong instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rnnstream.errors import ModelMismatchError
from rnnstream.export.parity import onnx_reference, torch_reference, unflatten_reference
from rnnstream.runtime.model import Model

__all__ = ["refuse_other_model"]


def refuse_other_model(model: nn.Module, runtime_model: Model, file: str) -> None:
    """Raise :class:`ModelMismatchError` unless ``model``, run on a two-step input laid out as
    ``file``'s, returns a first output and final states of the file's shapes."""
    sig = runtime_model.signature
    spec = sig.input
    steps = {spec.batch_axis: 1, spec.time_axis: 2}
    shape = [steps.get(axis, dim) for axis, dim in enumerate(spec.shape)]
    if not all(isinstance(dim, int) for dim in shape):
        return  # an input of unknown size: the parity measurement tells
    x = np.zeros(shape, dtype=spec.dtype)
    try:
        with torch.no_grad():
            y, states = torch_reference(model, torch.from_numpy(x), spec.time_axis)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelMismatchError(
            file, f"it does not take {spec.name} {spec.dtype} {shape} ({reason})"
        ) from e
    want_y, want_states = onnx_reference(runtime_model, x)
    got = [unflatten_reference(y, sig.outputs[0], x.shape, sig).shape, *(s.shape for s in states)]
    want = [want_y.shape, *(s.shape for s in want_states)]
    if got != want:
        raise ModelMismatchError(
            file, f"on one input its output and states have shapes {got}, the file's {want}"
        )
