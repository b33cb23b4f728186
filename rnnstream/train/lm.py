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

from rnnstream.models.charlm import CharLMConfig
from rnnstream.train.text import TextCorpus, token_stream

__all__ = ["LMBatch", "LanguageModelTask", "bits_per_token"]

State = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class LMBatch:
    """Inputs ``x`` and next-token targets ``y`` (``[batch, time]``); ``first`` starts an epoch."""

    x: torch.Tensor
    y: torch.Tensor
    first: bool


def _lanes(tokens: torch.Tensor, lanes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets ``[lanes, length]``: ``lanes`` contiguous pieces of the stream."""
    length = (len(tokens) - 1) // lanes
    if length < 1:
        raise ValueError(f"a stream of {len(tokens)} tokens is too short for {lanes} lanes")
    x = tokens[: lanes * length].view(lanes, length)
    y = tokens[1 : lanes * length + 1].view(lanes, length)
    return x, y


def _detach(state: State) -> State:
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def bits_per_token(
    model: nn.Module, tokens: torch.Tensor, lanes: int = 16, seq_len: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy (nats) and bits per token of ``model`` predicting ``tokens``.

    The stream is cut into ``lanes`` pieces that run side by side with their state carried from
    chunk to chunk, so every prediction sees all of its piece's past.
    """
    x, y = _lanes(tokens, min(lanes, len(tokens) - 1))
    total, count = 0.0, 0
    state = None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for t in range(0, x.shape[1], seq_len):
                logits, state = model(x[:, t : t + seq_len], state)
                target = y[:, t : t + seq_len]
                total += F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
                ).item()
                count += target.numel()
    finally:
        model.train(was_training)
    nats = total / count
    return nats, nats / math.log(2)


class LanguageModelTask:
    """Next-token prediction over a training and a validation token stream (1-D int64)."""

    def __init__(
        self,
        train_tokens: torch.Tensor,
        val_tokens: torch.Tensor,
        batch_size: int,
        seq_len: int,
    ) -> None:
        self.x, self.y = _lanes(train_tokens, batch_size)
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

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

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
