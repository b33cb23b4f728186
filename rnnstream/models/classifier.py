"""``SequenceClassifier``: one label per sequence, with a label estimate after every step.

Unidirectional, ``forward`` returns per-step logits ``[B, T, C]``: step ``t``'s logits read the
top layer's hidden state after ``t``, so a stream gives an estimate after each step and the last
step's is the sequence label. Bidirectional (offline, exports as not streamable), ``forward``
returns the sequence logits ``[B, C]`` from the forward direction's last and the backward
direction's first hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnstream.models.common import make_recurrent
from rnnstream.models.inputs import LabellerConfig, example_input, input_layer

__all__ = ["SequenceClassifier", "SequenceClassifierConfig"]

State = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class SequenceClassifierConfig(LabellerConfig):
    """The architecture of a :class:`SequenceClassifier`; round-trips through JSON."""

    KIND: ClassVar[str] = "sequence_classifier"
    bidirectional: bool = False


class SequenceClassifier(nn.Module):
    """``forward(x, state=None) -> (logits, state)``; see the module docstring for the shapes."""

    def __init__(self, config: SequenceClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed, size = input_layer(c.num_tokens, c.input_size, c.embed_size)
        self.rnn = make_recurrent(
            c.cell,
            size,
            c.hidden_size,
            c.num_layers,
            batch_first=c.batch_first,
            dropout=c.dropout,
            bidirectional=c.bidirectional,
        )
        self.head = nn.Linear(c.hidden_size * (2 if c.bidirectional else 1), c.num_classes)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        y, state = self.rnn(self.embed(x), state)
        if not self.config.bidirectional:
            return self.head(y), state
        h = self.config.hidden_size
        time = 1 if self.config.batch_first else 0
        last = torch.cat([y.select(time, -1)[..., :h], y.select(time, 0)[..., h:]], dim=-1)
        return self.head(last), state

    def sequence_logits(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of right-padded sequences of ``lengths`` steps (batch first).

        Unidirectional: the per-step logits at each sequence's last step (what a stream gives).
        Bidirectional: the sequences are packed, so the backward direction starts at each end.
        """
        if not self.config.batch_first:
            raise ValueError("sequence_logits takes batch-first input")
        if not self.config.bidirectional:
            logits, _ = self(x)
            return logits[torch.arange(len(x)), lengths - 1]
        packed = pack_padded_sequence(
            self.embed(x), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(torch.cat([h[-2], h[-1]], dim=-1))

    def example_input(self, batch: int = 2, steps: int = 3) -> torch.Tensor:
        """Random input of the right dtype and layout (used by export)."""
        c = self.config
        return example_input(c.num_tokens, c.input_size, c.batch_first, batch, steps)
