"""The language-model task: teacher forcing with truncated BPTT over long token streams.

The training stream is cut into ``batch`` parallel lanes; each training batch is the next
``seq_len`` tokens of every lane, and the recurrent state is carried from one batch to the next
(detached, so gradients stop at the chunk boundary). Validation runs the same way without
gradients and reports bits per character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rnnstream.corpus import TextCorpus
from rnnstream.models.charlm import CharLMConfig
from rnnstream.models.scoring import bits_per_token, cut_lanes
from rnnstream.train.text import token_stream

__all__ = ["LMBatch", "LanguageModelTask"]

State = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class LMBatch:
    """Inputs ``x`` and next-token targets ``y`` (``[batch, time]``); ``first`` starts an epoch."""

    x: torch.Tensor
    y: torch.Tensor
    first: bool


def _detach(state: State) -> State:
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


class LanguageModelTask:
    """Next-token prediction over a training and a validation token stream (1-D int64)."""

    def __init__(
        self,
        train_tokens: torch.Tensor,
        val_tokens: torch.Tensor,
        batch_size: int,
        seq_len: int,
    ) -> None:
        self.x, self.y = cut_lanes(train_tokens, batch_size)
        self.val_tokens = val_tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self._state: State | None = None

    @classmethod
    def from_corpus(
        cls, corpus: TextCorpus, config: CharLMConfig, batch_size: int, seq_len: int, seed: int
    ) -> LanguageModelTask:
        """The task over ``corpus`` encoded with ``config``'s vocabulary; ``seed`` orders the
        training documents (validation keeps its own order)."""
        return cls(
            token_stream(corpus.train, config, shuffle_seed=seed),
            token_stream(corpus.validation, config),
            batch_size,
            seq_len,
        )

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.x.shape[1] / self.seq_len)

    def batch(self, index: int) -> LMBatch:
        """Training batch ``index`` of an epoch (the same every epoch)."""
        t = index * self.seq_len
        sl = slice(t, t + self.seq_len)
        return LMBatch(self.x[:, sl], self.y[:, sl], first=index == 0)

    def loss(self, model: nn.Module, batch: LMBatch) -> torch.Tensor:
        """Mean cross-entropy of the batch; the state carries on from the previous batch."""
        if batch.first:
            self._state = None
        logits, state = model(batch.x, self._state)
        self._state = _detach(state)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.y.reshape(-1))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss (nats per token) and bits per character."""
        nats, bits = bits_per_token(model, self.val_tokens)
        return {"loss": nats, "bpc": bits}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The carried recurrent state, so that a resumed run continues exactly."""
        if self._state is None:
            return {}
        parts = self._state if isinstance(self._state, tuple) else (self._state,)
        return {f"carry.{i}": p for i, p in enumerate(parts)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        parts = tuple(tensors[f"carry.{i}"] for i in range(len(tensors)))
        if not parts:
            self._state = None
        else:
            self._state = parts if len(parts) > 1 else parts[0]
