"""``CharLM``: a character language model, token ids → embedding → LSTM/GRU/RNN → logits.

Token ids: ``0`` is BOS (begin of text), ``1`` is EOS (end of text), and character ``chars[i]``
is id ``i + 2``. :attr:`CharLMConfig.vocab` spells this out as one string whose position ``i``
holds token ``i``, with the ASCII control characters STX (``"\\x02"``) and ETX (``"\\x03"``)
standing in for BOS and EOS. That string is what the exported signature carries, so the torch-free
:class:`rnnstream.runtime.Vocabulary` maps text to the same ids the model was trained on.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from torch import nn

from rnnstream.cells import check_cell
from rnnstream.models.common import JsonConfig, make_recurrent
from rnnstream.models.description import ModelDescription

__all__ = [
    "BOS",
    "BOS_CHAR",
    "EOS",
    "EOS_CHAR",
    "FALLBACK_CHAR",
    "N_SPECIAL",
    "CharLM",
    "CharLMConfig",
]

BOS, EOS = 0, 1
N_SPECIAL = 2  # token ids below this are special; chars[i] is token N_SPECIAL + i
BOS_CHAR, EOS_CHAR = "\x02", "\x03"  # ASCII "start of text" / "end of text"
FALLBACK_CHAR = "\ufffd"  # Unicode's replacement character: what unknown characters become
DEFAULT_CHARS = string.printable + FALLBACK_CHAR


@dataclass(frozen=True)
class CharLMConfig(JsonConfig):
    """The architecture of a :class:`CharLM`; round-trips through JSON."""

    cell: str = "lstm"
    num_layers: int = 2
    hidden_size: int = 256
    embed_size: int = 64
    chars: str = DEFAULT_CHARS  # the characters; chars[i] is token N_SPECIAL + i
    dropout: float = 0.0
    batch_first: bool = True

    def __post_init__(self) -> None:
        check_cell(self.cell)
        if not self.chars:
            raise ValueError("chars must not be empty")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("chars has duplicate characters")
        reserved = {BOS_CHAR, EOS_CHAR} & set(self.chars)
        if reserved:
            raise ValueError(f"chars must not contain the BOS/EOS placeholders {reserved}")
        for name in ("num_layers", "hidden_size", "embed_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def describe(self) -> ModelDescription:
        """A character LM with BOS and EOS."""
        return ModelDescription(kind="char_lm", vocab=self.vocab, bos=BOS, eos=EOS)

    @property
    def vocab(self) -> str:
        """All tokens as one string, position = token id: BOS, EOS, then the characters."""
        return BOS_CHAR + EOS_CHAR + self.chars

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + N_SPECIAL


class CharLM(nn.Module):
    """``forward(x, state=None) -> (logits, state)``: next-token logits for every position."""

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_size)
        self.rnn = make_recurrent(
            c.cell,
            c.embed_size,
            c.hidden_size,
            c.num_layers,
            batch_first=c.batch_first,
            dropout=c.dropout,
        )
        self.head = nn.Linear(c.hidden_size, c.vocab_size)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, ...]]:
        y, state = self.rnn(self.embed(x), state)
        return self.head(y), state

    def example_input(self, batch: int = 2, steps: int = 3) -> torch.Tensor:
        """Random token ids of the right layout (used by export)."""
        lead = (batch, steps) if self.config.batch_first else (steps, batch)
        return torch.randint(0, self.config.vocab_size, lead)
