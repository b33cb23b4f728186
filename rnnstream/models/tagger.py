"""``FrameTagger``: one label per frame (or token), logits ``[B, T, C]``; streams step by step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rnnstream.models.common import JsonConfig, check_cell, make_recurrent
from rnnstream.models.inputs import check_input, example_input, input_layer, token_vocab

__all__ = ["FrameTagger", "FrameTaggerConfig"]

State = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class FrameTaggerConfig(JsonConfig):
    """The architecture of a :class:`FrameTagger`; round-trips through JSON.

    ``num_tokens`` > 0: the input is token ids (256: bytes); else frames of ``input_size``.
    """

    labels: tuple[str, ...] = ("a", "b")
    cell: str = "lstm"
    num_layers: int = 1
    hidden_size: int = 128
    num_tokens: int = 256
    input_size: int = 0
    embed_size: int = 32
    dropout: float = 0.0
    batch_first: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))  # JSON gives a list
        check_cell(self.cell)
        check_input(self.num_tokens, self.input_size, self.embed_size)
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be at least two distinct names")
        if self.num_layers < 1 or self.hidden_size < 1:
            raise ValueError("num_layers and hidden_size must be >= 1")

    @property
    def kind(self) -> str:
        return "frame_tagger"

    @property
    def vocab(self) -> str | None:
        return token_vocab(self.num_tokens)

    @property
    def num_classes(self) -> int:
        return len(self.labels)


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
