"""Refuse, in one sentence, a model whose code pins its time or batch axis to a number.

A streamed model takes any number of sequences and any number of steps per call (one, when
stepping). Code such as ``input.reshape(-1, 28, 28)`` before an LSTM fixes the time axis at 28:
the forward runs on the example it was written for and on no other length. The check runs the
forward on ``example``, then on one more step and on one more sequence, and names the axis that
breaks it, instead of letting torch.export fail later with its multi-line report. An input whose
time is a later axis (``[batch, channels, time, freq]``) fails the same way on axis 1; the message
then names the axis that takes any length and the transposing wrapper that exports it.
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
            cause = (
                f"{name}'s code pins the {axis_name} axis (axis {axis} of the input) to {size}: "
                f"it runs on {size} but fails on {size + 1} ({first_line(e)}).\n"
            )
            channels_first = axis_name == "time" and batch_first
            later = _free_later_axis(model, example) if channels_first else None
            if later is not None:
                raise ExportError(
                    f"{cause}It runs on any length of axis {later}: if time is that axis "
                    f"([batch, channels, time, ...]), export a wrapper whose forward(x) calls "
                    f"the model on x.transpose(1, {later}), with example= transposed the same way."
                ) from e
            raise ExportError(
                f"{cause}A streamed model takes any {axis_name} length: make that axis dynamic in "
                "the code (e.g. reshape(x.size(0), -1, ...) instead of a constant)."
            ) from e


def _free_later_axis(model: nn.Module, example: torch.Tensor) -> int | None:
    """The first axis after the batch-first time axis that the forward runs on at any length
    (time, when the input is ``[batch, channels, time, ...]``), if one is."""
    for axis in range(2, example.dim()):
        longer = torch.cat([example, example.narrow(axis, 0, 1)], dim=axis)
        try:
            _run(model, longer)
        except Exception:  # a user's forward can raise anything: not this axis
            continue
        return axis
    return None


def _run(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        state_arguments(model, x).call(model, x)
