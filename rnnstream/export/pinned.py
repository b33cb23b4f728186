"""Refuse, in one sentence, a model whose code pins its time or batch axis to a number.

A streamed model takes any number of sequences and any number of steps per call (one, when
stepping). Code such as ``input.reshape(-1, 28, 28)`` before an LSTM fixes the time axis at 28:
the forward runs on the example it was written for and on no other length. The check runs the
forward on ``example``, then on one more step and on one more sequence, and names the axis that
breaks it, instead of letting torch.export fail later with its multi-line report.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.export.forward_args import state_arguments
from rnnstream.export.messages import first_line

__all__ = ["check_free_axes"]


def check_free_axes(model: nn.Module, example: torch.Tensor, batch_first: bool) -> None:
    """Raise :class:`ExportError` if ``model`` runs on ``example`` but not with another number of
    steps or sequences."""
    name = type(model).__name__
    try:
        _run(model, example)
    except ExportError:
        raise
    except Exception as e:  # a user's forward can raise anything: name the call that failed
        raise ExportError(
            f"{name}.forward fails on the example of shape {list(example.shape)}: {first_line(e)}"
        ) from e
    axes = {"time": 1 if batch_first else 0, "batch": 0 if batch_first else 1}
    for axis_name, axis in axes.items():
        size = example.shape[axis]
        longer = torch.cat([example, example.narrow(axis, 0, 1)], dim=axis)
        try:
            _run(model, longer)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(
                f"{name}'s code pins the {axis_name} axis (axis {axis} of the input) to {size}: "
                f"it runs on {size} but fails on {size + 1} ({first_line(e)}).\n"
                f"A streamed model takes any {axis_name} length: make that axis dynamic in the "
                f"code (e.g. reshape(x.size(0), -1, ...) instead of a constant)."
            ) from e


def _run(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        state_arguments(model, x).call(model, x)
