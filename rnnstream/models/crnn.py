"""``CRNN``: a forecaster with a causal convolutional front-end, frames in, frames out.

``forward(x [B, T, F]) -> (y [B, T, F], state)``: a stack of causal ``Conv1d`` over time (kernel
``k``, dilations 1, 2, 4, ..., each padded on the left only and followed by a ReLU), then the
GRU/LSTM, then a linear head; ``y[:, t]`` predicts ``x[:, t + 1]`` as the :class:`Forecaster`
does (standardised units in, the change from the current value out). Exported, each
convolution's last ``(k-1)·dilation`` frames become a context state (``convs_<i>_ctx0`` →
``convs_<i>_ctxn``) next to the recurrent state, so the model streams one frame at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rnnstream.models.forecaster import Forecaster, ForecasterConfig

__all__ = ["CRNN", "CRNNConfig"]


@dataclass(frozen=True)
class CRNNConfig(ForecasterConfig):
    """A :class:`ForecasterConfig` with the convolutional front-end; round-trips through JSON."""

    conv_layers: int = 2
    conv_channels: int = 16
    kernel_size: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conv_layers < 1 or self.conv_channels < 1 or self.kernel_size < 1:
            raise ValueError("conv_layers, conv_channels and kernel_size must be >= 1")

    @property
    def dilations(self) -> tuple[int, ...]:
        """Each convolution's dilation: 1, 2, 4, ..."""
        return tuple(2**i for i in range(self.conv_layers))

    @property
    def receptive_field(self) -> int:
        """How many input frames (the current one included) the recurrent layer sees per step."""
        return 1 + sum((self.kernel_size - 1) * d for d in self.dilations)


class CRNN(Forecaster):
    """``forward(x, state=None) -> (next-value predictions, state)``, same shape as ``x``.

    ``state`` is the recurrent layer's; the convolutions see the whole input they are given (a
    stream carries their context as state of the exported model).
    """

    config: CRNNConfig

    def build_front(self) -> int:
        """The causal convolutions (registered before the recurrent layer, as checkpoints have
        them); the recurrent layer reads their channels."""
        c = self.config
        sizes = [c.features] + [c.conv_channels] * c.conv_layers
        self.convs = nn.ModuleList(
            nn.Conv1d(sizes[i], sizes[i + 1], c.kernel_size, dilation=d)
            for i, d in enumerate(c.dilations)
        )
        return c.conv_channels

    def front(self, h: torch.Tensor) -> torch.Tensor:
        """Each convolution padded on the left only (causal), then a ReLU."""
        batch_first = self.config.batch_first
        h = h.transpose(1, 2) if batch_first else h.permute(1, 2, 0)  # [B, F, T]
        for conv in self.convs:
            h = F.relu(conv(F.pad(h, ((conv.kernel_size[0] - 1) * conv.dilation[0], 0))))
        return h.transpose(1, 2) if batch_first else h.permute(2, 0, 1)
