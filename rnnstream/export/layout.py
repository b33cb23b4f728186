"""The model's input: its dtype, feature shape and layout (which axis is batch, which is time).

The dtype and feature shape come from ``example=`` or the model's first modules (an embedding:
token ids; a linear layer, convolution or recurrent layer: frames of its input size). The layout
is first taken from the first recurrent layer (``batch_first``). A model may transpose its input
before that layer (``x.permute(1, 0, 2)`` into a time-major ``nn.LSTM``,
``x.transpose(0, 1)`` into a batch-first one), so the exporter checks the guess: it runs the
forward once on an input with different batch and time sizes and sees which of them the layer
receives as its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.export.layers import RECURRENT_TYPES
from rnnstream.export.trace import find_recurrent
from rnnstream.runtime import TensorSpec

__all__ = ["InputSpec", "batch_first_seen_by_layer", "guess_input"]


@dataclass(frozen=True)
class InputSpec:
    """What the model's input ``x`` is: float frames or int64 token ids, and its layout."""

    dtype: torch.dtype
    feature_shape: tuple[int, ...]
    batch_first: bool
    token_range: int | None = None

    def sample(self, batch: int, steps: int, seed: int) -> torch.Tensor:
        """A random input of ``batch`` sequences of ``steps`` steps in the model's layout."""
        gen = torch.Generator().manual_seed(seed)
        lead = (batch, steps) if self.batch_first else (steps, batch)
        if self.token_range is not None:
            return torch.randint(0, self.token_range, lead + self.feature_shape, generator=gen)
        return torch.randn(lead + self.feature_shape, generator=gen)

    def tensor_spec(self) -> TensorSpec:
        lead = ("batch", "time") if self.batch_first else ("time", "batch")
        return TensorSpec(
            name="x",
            dtype="int64" if self.token_range is not None else "float32",
            shape=lead + self.feature_shape,
            batch_axis=0 if self.batch_first else 1,
            time_axis=1 if self.batch_first else 0,
        )


def guess_input(
    model: nn.Module, example: torch.Tensor | None, batch_first: bool | None
) -> InputSpec:
    """The input's dtype, feature shape and layout from ``example`` or the model's first
    modules, its layout the first recurrent layer's (``batch_first`` when given)."""
    recurrent = find_recurrent(model)
    if batch_first is None and recurrent:
        batch_first = recurrent[0][1].batch_first
    if batch_first is None:
        config = getattr(model, "config", None)
        batch_first = getattr(model, "batch_first", getattr(config, "batch_first", True))
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if example is None and callable(getattr(model, "example_input", None)):
        example = model.example_input()
    if example is not None:
        if example.dim() < 2:
            raise ExportError(
                f"example must have batch and time axes, got shape {list(example.shape)}"
            )
        if example.is_floating_point():
            return InputSpec(torch.float32, tuple(example.shape[2:]), batch_first)
        vocab = embeddings[0].num_embeddings if embeddings else int(example.max()) + 1
        return InputSpec(torch.int64, tuple(example.shape[2:]), batch_first, vocab)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            raise ExportError(
                f"{type(m).__name__} {name!r} comes before anything that tells the model's frame "
                "shape: pass example= (a tensor shaped like the model's real input)"
            )
        if isinstance(m, nn.Embedding):
            return InputSpec(torch.int64, (), batch_first, m.num_embeddings)
        if isinstance(m, nn.Linear):
            return InputSpec(torch.float32, (m.in_features,), batch_first)
        if isinstance(m, nn.Conv1d):  # a convolutional front-end: frames of in_channels
            return InputSpec(torch.float32, (m.in_channels,), batch_first)
        if isinstance(m, (*RECURRENT_TYPES, nn.RNNCellBase)):
            return InputSpec(torch.float32, (m.input_size,), batch_first)
    raise ExportError("cannot tell the model's input; pass example=")


def batch_first_seen_by_layer(
    model: nn.Module,
    sample: torch.Tensor,
    guess: bool,
    call: Callable[[nn.Module, torch.Tensor], object],
) -> bool:
    """The input's layout as the first recurrent layer sees it: ``guess`` unless the layer
    receives the guessed time axis as its batch. ``sample`` is laid out as ``guess`` says, with
    different batch and time sizes; ``call(model, x)`` runs the forward (state arguments
    supplied). A forward that fails here keeps the guess (later checks name the failure)."""
    recurrent = find_recurrent(model)
    if not recurrent or sample.shape[0] == sample.shape[1]:
        return guess
    layer = recurrent[0][1]
    seen: list[int] = []

    def record(_module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if not seen and isinstance(x, torch.Tensor) and x.dim() == 3:
            seen.append(x.shape[0 if layer.batch_first else 1])

    hook = layer.register_forward_pre_hook(record)
    try:
        with torch.no_grad():
            call(model, sample)
    except Exception:  # a user's forward can raise anything: the guess stands
        return guess
    finally:
        hook.remove()
    steps = sample.shape[1 if guess else 0]
    return not guess if seen and seen[0] == steps else guess
