"""Bits per token: how well a language model predicts a token stream, scored in side-by-side lanes.

The stream is cut into ``lanes`` contiguous pieces that run as one batch with their state carried
from chunk to chunk, so every prediction sees all of its piece's past. Training reports its
validation bits per character this way, and export scores a quantised model's ONNX stream on the
same lanes (:func:`rnnstream.export.quality.stream_bits_per_token`), so the numbers compare.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["bits_per_token", "cut_lanes"]

Tokens = TypeVar("Tokens", torch.Tensor, np.ndarray)


def cut_lanes(tokens: Tokens, lanes: int) -> tuple[Tokens, Tokens]:
    """Inputs and next-token targets ``[lanes, length]``: ``lanes`` contiguous stream pieces."""
    length = (len(tokens) - 1) // lanes
    if length < 1:
        raise ValueError(f"a stream of {len(tokens)} tokens is too short for {lanes} lanes")
    x = tokens[: lanes * length].reshape(lanes, length)
    y = tokens[1 : lanes * length + 1].reshape(lanes, length)
    return x, y


def bits_per_token(
    model: nn.Module, tokens: torch.Tensor, lanes: int = 16, seq_len: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy (nats) and bits per token of ``model`` predicting ``tokens``."""
    x, y = cut_lanes(tokens, min(lanes, len(tokens) - 1))
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
