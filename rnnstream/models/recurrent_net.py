"""``RecurrentNet``: input (frames or token ids) → LSTM/GRU/RNN → optional linear head."""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from torch import nn

from rnnstream.cells import check_cell
from rnnstream.models.common import JsonConfig, make_recurrent
from rnnstream.models.description import ModelDescription

__all__ = ["VOCABULARIES", "RecurrentNet", "RecurrentNetConfig"]

VOCABULARIES = {"printable": string.printable}


@dataclass(frozen=True)
class RecurrentNetConfig(JsonConfig):
    """The architecture of a :class:`RecurrentNet`; round-trips through JSON."""

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    input_size: int = 16  # frame size; ignored when ``vocab`` is set
    vocab: str | None = None  # characters; token ids index an embedding
    embed_size: int = 32
    output_size: int | None = None  # None: vocabulary size with a vocab, else no head
    bias: bool = True
    batch_first: bool = True
    proj_size: int = 0
    bidirectional: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_cell(self.cell)
        if self.proj_size and self.cell != "lstm":
            raise ValueError("proj_size is an LSTM option")

    def describe(self) -> ModelDescription:
        """A character LM (no BOS/EOS) with a vocabulary, else a generic model."""
        return ModelDescription(kind="char_lm" if self.vocab else "generic", vocab=self.vocab)

    @property
    def head_size(self) -> int | None:
        if self.output_size is not None:
            return self.output_size or None
        return len(self.vocab) if self.vocab else None


class RecurrentNet(nn.Module):
    """``forward(x, state=None) -> (y, state)`` with state in PyTorch's layout."""

    def __init__(self, config: RecurrentNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(len(c.vocab), c.embed_size) if c.vocab else None
        rnn_input = c.embed_size if c.vocab else c.input_size
        self.rnn = make_recurrent(
            c.cell,
            rnn_input,
            c.hidden_size,
            c.num_layers,
            bias=c.bias,
            batch_first=c.batch_first,
            dropout=c.dropout,
            bidirectional=c.bidirectional,
            proj_size=c.proj_size,
        )
        features = (c.proj_size or c.hidden_size) * (2 if c.bidirectional else 1)
        self.head = nn.Linear(features, c.head_size) if c.head_size else None

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, ...]]:
        h = self.embed(x) if self.embed is not None else x
        y, state = self.rnn(h, state)
        if self.head is not None:
            y = self.head(y)
        return y, state

    def example_input(self, batch: int = 2, steps: int = 3) -> torch.Tensor:
        """A random input of the right dtype and layout (used by export)."""
        lead = (batch, steps) if self.config.batch_first else (steps, batch)
        if self.config.vocab:
            return torch.randint(0, len(self.config.vocab), lead)
        return torch.randn(*lead, self.config.input_size)
