"""Loading what commands work on: a runtime model with the --threads/--state/--const/--axes
options, and a PyTorch checkpoint (torch imported only then), checked to be the model a file was
exported from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnstream.errors import CheckpointError


def load_model(model_path: str | Path, threads: int, states: dict, consts: dict, axes: dict) -> Any:
    """The runtime model at ``model_path`` with the --threads, --state, --const and --axes
    options."""
    import rnnstream

    return rnnstream.load(
        model_path,
        threads=threads,
        state_map=states or None,
        constants=consts or None,
        axes=axes or None,
    )


def load_torch_checkpoint(path: str | Path, exported_as: str | Path | None = None) -> Any:
    """The PyTorch model saved at ``path``; with ``exported_as`` (an ONNX file), refused unless
    it is the model that file was exported from."""
    from rnnstream.models import load_checkpoint

    module = load_checkpoint(path)
    if exported_as is not None:
        check_same_model(module, path, exported_as)
    return module


def check_same_model(module: Any, checkpoint: str | Path, model_path: str | Path) -> None:
    """Refuse the checkpoint of another model before parity runs: on a two-step input laid out
    as MODEL's, PyTorch must run and return an output and states of MODEL's shapes."""
    import numpy as np
    import torch

    import rnnstream
    from rnnstream.export.parity import onnx_reference, torch_reference

    runtime_model = rnnstream.load(model_path)
    spec = runtime_model.signature.input
    steps = {spec.batch_axis: 1, spec.time_axis: 2}
    shape = [steps.get(axis, dim) for axis, dim in enumerate(spec.shape)]
    if not all(isinstance(dim, int) for dim in shape):
        return  # an input of unknown size: the parity measurement tells
    x = np.zeros(shape, dtype=spec.dtype)
    mismatch = f"{checkpoint} is not the model exported as {model_path}"
    try:
        y, states = torch_reference(module, torch.from_numpy(x), spec.time_axis)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{mismatch}: it does not take {spec.name} {spec.dtype} {shape} ({reason})"
        ) from e
    want_y, want_states = onnx_reference(runtime_model, x)
    got = [y.shape, *(s.shape for s in states)]
    want = [want_y.shape, *(s.shape for s in want_states)]
    if got != want:
        raise CheckpointError(
            f"{mismatch}: on one input its output and states have shapes {got}, the file's {want}"
        )
