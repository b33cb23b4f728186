"""Packed sequences (``pack_padded_sequence`` / ``pad_packed_sequence``): when they export.

Packing lets a padded batch of sequences of different lengths run through a recurrent layer in
one call. A stream does not need it: each sequence is stepped for exactly as long as it has input,
and a pool's rows join and leave on their own. So a model that packs only when it is given lengths
(``forward(text, lengths=None)`` with ``if lengths is not None:``) exports as it is, traced without
them (full length, packing a no-op). A model that always packs (lengths a required argument, or
computed from the padding) is refused, naming the argument and that fix; packing cannot be traced
with a dynamic time axis.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnnstream.errors import ExportError

__all__ = ["packed_input_refusal", "packing_argument_refusal"]

_WHY = "a stream steps each sequence for as long as it has input, so it needs no packing"


def packed_input_refusal(layer: str) -> ExportError:
    """The error for recurrent layer ``layer`` called with a :class:`PackedSequence`."""
    return ExportError(
        f"{repr(layer) if layer else 'the recurrent layer'} is called with a PackedSequence "
        f"(pack_padded_sequence): {_WHY}.\nPack only when lengths are passed (forward(x, "
        "lengths=None) and `if lengths is not None:`); the export runs without them."
    )


def packing_argument_refusal(
    model: nn.Module,
    example: torch.Tensor,
    argument: str,
    recurrent: list[tuple[str, nn.Module]],
    batch_first: bool,
) -> ExportError | None:
    """The error for a forward whose required ``argument`` is the lengths it packs with, found by
    passing full lengths; None when the model does not pack with it."""
    batch, steps = example.shape[:2] if batch_first else example.shape[1::-1]
    lengths = torch.full((batch,), steps, dtype=torch.int64)
    packed: list[str] = []

    def watcher(name: str) -> Callable:
        def watch(_module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], PackedSequence):
                packed.append(name)

        return watch

    hooks = [m.register_forward_pre_hook(watcher(name)) for name, m in recurrent]
    try:
        with torch.no_grad():
            model(example, lengths)
    except Exception:  # not a lengths argument after all: the caller's own error stands
        return None
    finally:
        for hook in hooks:
            hook.remove()
    if not packed:
        return None
    return ExportError(
        f"{type(model).__name__}.forward packs its input with the lengths {argument!r} before "
        f"{packed[0]!r}: {_WHY}.\nGive {argument!r} a default of None and pack only when it is "
        f"passed (`if {argument} is not None:`); the export runs without it."
    )
