"""``FrameTagger``: one label per frame (or token), logits ``[B, T, C]``; streams step by step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from rnnstream.models.common import make_recurrent
from rnnstream.models.inputs import LabellerConfig, example_input, input_layer

__all__ = ["FrameTagger", "FrameTaggerConfig"]

State = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class FrameTaggerConfig(LabellerConfig):
    """The architecture of a :class:`FrameTagger`; round-trips through JSON."""

    KIND: ClassVar[str] = "frame_tagger"


class FrameTagger(nn.Module):
    """``forward(x, state=None) -> (logits [B, T, C], state)``: a label for every step."""

    def __init__(self, config: FrameTaggerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed, size = input_layer(c.num_tokens, c.input_size, c.embed_size)
        self.rnn = make_recurrent(
            c.cell, size, c.hidden_size, c.num_layers, batch_first=c.batch_first, dropout=c.dropout
        )
        self.head = nn.Linear(c.hidden_size, c.num_classes)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        y, state = self.rnn(self.embed(x), state)
        return self.head(y), state

    def example_input(self, batch: int = 2, steps: int = 3) -> torch.Tensor:
        """Random input of the right dtype and layout (used by export)."""
        c = self.config
        return example_input(c.num_tokens, c.input_size, c.batch_first, batch, steps)
