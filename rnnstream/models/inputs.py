"""The input side shared by the labelling models: byte/token ids through an embedding, or frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from rnnstream.cells import check_cell
from rnnstream.models.common import JsonConfig
from rnnstream.models.description import ModelDescription

__all__ = [
    "BYTE_VOCAB",
    "LabellerConfig",
    "check_input",
    "example_input",
    "input_layer",
    "token_vocab",
]

BYTE_VOCAB = "".join(map(chr, range(256)))  # byte b is token b: text decoded as latin-1 maps 1:1


def check_input(num_tokens: int, input_size: int, embed_size: int) -> None:
    """Raise ``ValueError`` unless exactly one of ``num_tokens`` / ``input_size`` is set."""
    if (num_tokens > 0) == (input_size > 0):
        raise ValueError("set exactly one of num_tokens (token ids) and input_size (frames)")
    if num_tokens and embed_size < 1:
        raise ValueError("embed_size must be >= 1")


def token_vocab(num_tokens: int) -> str | None:
    """The signature's vocabulary: the 256 byte values for byte input, else none."""
    return BYTE_VOCAB if num_tokens == 256 else None


def input_layer(num_tokens: int, input_size: int, embed_size: int) -> tuple[nn.Module, int]:
    """An embedding for token ids (or the identity for frames) and the recurrent input size."""
    if num_tokens:
        return nn.Embedding(num_tokens, embed_size), embed_size
    return nn.Identity(), input_size


def example_input(
    num_tokens: int, input_size: int, batch_first: bool, batch: int, steps: int
) -> torch.Tensor:
    """Random token ids or frames in the model's layout (used by export)."""
    lead = (batch, steps) if batch_first else (steps, batch)
    if num_tokens:
        return torch.randint(0, num_tokens, lead)
    return torch.randn(*lead, input_size)


@dataclass(frozen=True)
class LabellerConfig(JsonConfig):
    """What the labelling models' configs share: labels, the recurrent core, the input side.

    ``num_tokens`` > 0: the input is token ids (256: bytes); else frames of ``input_size``.
    """

    KIND: ClassVar[str]  # the signature's kind, set by each model's config
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

    def describe(self) -> ModelDescription:
        """The model's kind and class names; byte input has the 256 bytes as vocabulary."""
        return ModelDescription(
            kind=self.KIND, vocab=token_vocab(self.num_tokens), labels=self.labels
        )

    @property
    def num_classes(self) -> int:
        return len(self.labels)
