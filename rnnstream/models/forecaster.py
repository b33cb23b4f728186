"""``Forecaster``: next-value regression for multivariate time series, frames in, frames out.

``forward(x [B, T, F]) -> (y [B, T, F], state)``: ``y[:, t]`` predicts ``x[:, t + 1]``. The model
works in standardised units (``(x - mean) / scale`` from the config) and predicts the change from
the current value, so its output is in the data's own units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rnnstream.cells import check_cell
from rnnstream.models.common import JsonConfig, make_recurrent
from rnnstream.models.description import ModelDescription
from rnnstream.models.inputs import example_input

__all__ = ["Forecaster", "ForecasterConfig"]

State = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class ForecasterConfig(JsonConfig):
    """The architecture of a :class:`Forecaster` and its data scaling; round-trips through JSON."""

    features: int = 1
    cell: str = "lstm"
    num_layers: int = 1
    hidden_size: int = 64
    mean: tuple[float, ...] | None = None  # per feature; None: 0
    scale: tuple[float, ...] | None = None  # per feature; None: 1
    dropout: float = 0.0
    batch_first: bool = True

    def __post_init__(self) -> None:
        check_cell(self.cell)
        if self.features < 1 or self.num_layers < 1 or self.hidden_size < 1:
            raise ValueError("features, num_layers and hidden_size must be >= 1")
        for name in ("mean", "scale"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
                if len(getattr(self, name)) != self.features:
                    raise ValueError(f"{name} needs one value per feature ({self.features})")
        if self.scale is not None and min(self.scale) <= 0:
            raise ValueError("scale must be > 0")

    def describe(self) -> ModelDescription:
        """A forecaster: frames in, frames out, no vocabulary."""
        return ModelDescription(kind="forecaster")


class Forecaster(nn.Module):
    """``forward(x, state=None) -> (next-value predictions, state)``, same shape as ``x``.

    Subclasses put a front-end between the standardised frames and the recurrent layer
    (:meth:`build_front`, :meth:`front`); the scaling and the head stay this class's.
    """

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = c = config
        recurrent_input = self.build_front()
        self.rnn = make_recurrent(
            c.cell,
            recurrent_input,
            c.hidden_size,
            c.num_layers,
            batch_first=c.batch_first,
            dropout=c.dropout,
        )
        self.head = nn.Linear(c.hidden_size, c.features)
        self.register_buffer("mean", torch.tensor(c.mean or [0.0] * c.features))
        self.register_buffer("scale", torch.tensor(c.scale or [1.0] * c.features))

    def build_front(self) -> int:
        """Register the front-end's modules; return the recurrent layer's input size."""
        return self.config.features

    def front(self, h: torch.Tensor) -> torch.Tensor:
        """The standardised frames (the model's layout) as the recurrent layer's input."""
        return h

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        y, state = self.rnn(self.front((x - self.mean) / self.scale), state)
        return x + self.head(y) * self.scale, state

    def example_input(self, batch: int = 2, steps: int = 3) -> torch.Tensor:
        """Random frames of the right layout (used by export)."""
        c = self.config
        return example_input(0, c.features, c.batch_first, batch, steps)
