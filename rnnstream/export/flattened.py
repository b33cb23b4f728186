"""Heads that flatten time and batch into one axis (``decoded.view(-1, ntoken)``).

The word LM of PyTorch's examples returns ``log_softmax(decoder(output).view(-1, V), dim=1)``:
``[T * B, V]`` rows in time-major order. A stream cannot split such an axis by itself, so the
exporter restores the two axes inside the graph: the traced head is followed by a ``Reshape`` to
``[T, B, ...]`` (or ``[B, T, ...]``) taken from the input's own shape, and the file's output has
the usual batch and time axes; the runtime needs to know nothing about it.

Which order the rows are in is found by running PyTorch: a head whose leading size is ``T * B``
at two input sizes is flattened, and swapping the batch's sequences tells time-major rows
(``t * B + b``) from batch-major ones (``b * T + t``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rnnstream.errors import ExportError

__all__ = ["BATCH_TIME", "TIME_BATCH", "flattened_orders", "unflatten"]

TIME_BATCH = "time*batch"  # rows t * B + b: a time-major output flattened
BATCH_TIME = "batch*time"  # rows b * T + t: a batch-first output flattened

Run = Callable[[torch.Tensor], list[torch.Tensor]]


def flattened_orders(
    run: Run, example: torch.Tensor, batch_first: bool, places: tuple[str, ...]
) -> tuple[str | None, ...]:
    """For each head ``run(x)`` returns, its flattened order, or None when it is not flattened.

    ``example`` has at least two sequences and two steps in the model's layout (batch first or
    not); ``places`` name the heads in error messages.
    """
    batch_axis, time_axis = (0, 1) if batch_first else (1, 0)
    batch, steps = example.shape[batch_axis], example.shape[time_axis]
    longer = torch.cat([example, example.narrow(time_axis, 0, 1)], dim=time_axis)
    swapped = example.flip(batch_axis)
    with torch.no_grad():
        heads, heads_longer, heads_swapped = run(example), run(longer), run(swapped)
    orders: list[str | None] = []
    for place, y, y_longer, y_swapped in zip(places, heads, heads_longer, heads_swapped):
        if not _is_flattened(y, y_longer, batch, steps):
            orders.append(None)
            continue
        candidates = [
            order
            for order in (TIME_BATCH, BATCH_TIME)
            if torch.allclose(_swap_rows(y, order, batch, steps), y_swapped, atol=1e-5, rtol=1e-4)
        ]
        if len(candidates) != 1:
            raise ExportError(
                f"head {place} flattens time and batch into its first axis ({batch} sequences x "
                f"{steps} steps -> {y.shape[0]} rows) in an order the exporter cannot tell; "
                "return the per-step shape [batch, time, ...] (flatten for the loss instead)"
            )
        orders.append(candidates[0])
    return tuple(orders)


def unflatten(y: torch.Tensor, order: str | None, batch: object, steps: object) -> torch.Tensor:
    """``y`` with its flattened first axis split back into two (``order`` None: ``y`` itself)."""
    if order is None:
        return y
    lead = (steps, batch) if order == TIME_BATCH else (batch, steps)
    return y.reshape(*lead, *y.shape[1:])


def _is_flattened(y: torch.Tensor, y_longer: torch.Tensor, batch: int, steps: int) -> bool:
    """True when the first axis has ``T * B`` rows at both sizes and no separate time axis."""
    if y.dim() < 1 or y.shape[0] != batch * steps or y_longer.shape[0] != batch * (steps + 1):
        return False
    return tuple(y.shape[:2]) not in ((batch, steps), (steps, batch))


def _swap_rows(y: torch.Tensor, order: str, batch: int, steps: int) -> torch.Tensor:
    """``y``'s rows as they would be had the batch's sequences come in reverse order."""
    grid = unflatten(y, order, batch, steps)
    return grid.flip(1 if order == TIME_BATCH else 0).reshape(y.shape)
