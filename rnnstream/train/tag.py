"""The frame-tagging task: a label per step; metric: per-frame accuracy.

Sequences are token ids ``[T]`` or frames ``[T, F]`` with a tag per step. Training batches are
random crops, padded with masks; validation cuts every validation sequence into windows of
``max_len`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rnnstream.train.batching import CropSampler, masked_mean, pad
from rnnstream.train.classify import bytes_to_ids
from rnnstream.train.pytags import TaggedData

__all__ = ["TagBatch", "TaggingTask"]


@dataclass(frozen=True)
class TagBatch:
    """Padded inputs and tags ``[B, T]`` and the mask of the real steps."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor


class TaggingTask:
    """One label per step of each sequence."""

    def __init__(
        self,
        train: Sequence[tuple[torch.Tensor, torch.Tensor]],
        validation: Sequence[tuple[torch.Tensor, torch.Tensor]],
        batch_size: int,
        min_len: int,
        max_len: int,
        seed: int = 0,
        per_epoch: int | None = None,
    ) -> None:
        self.train = list(train)
        self.validation = [
            (x[t : t + max_len], y[t : t + max_len])
            for x, y in validation
            for t in range(0, len(x), max_len)
        ]
        if not self.validation:
            raise ValueError("no validation sequences")
        lengths = [len(x) for x, _ in self.train]
        # An epoch: as many crops as it takes to read the training steps once, on average.
        per_epoch = per_epoch or max(1, sum(lengths) // (batch_size * (min_len + max_len) // 2))
        self.sampler = CropSampler(lengths, batch_size, min_len, max_len, seed, per_epoch=per_epoch)

    @classmethod
    def from_tagged(
        cls, data: TaggedData, batch_size: int, min_len: int, max_len: int, seed: int = 0
    ) -> TaggingTask:
        """The task over tagged byte sequences (byte ids in, tags out)."""

        def convert(part: tuple[tuple[bytes, np.ndarray], ...]) -> list:
            return [(bytes_to_ids(b), torch.from_numpy(t)) for b, t in part]

        return cls(
            convert(data.train), convert(data.validation), batch_size, min_len, max_len, seed
        )

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.per_epoch

    def batch(self, index: int) -> TagBatch:
        """Training batch ``index`` of the epoch: random crops of random sequences."""
        crops = self.sampler.batch(index)
        x, _, mask = pad([self.train[i][0][a:b] for i, a, b in crops])
        y, _, _ = pad([self.train[i][1][a:b] for i, a, b in crops])
        return TagBatch(x, y, mask)

    def loss(self, model: nn.Module, batch: TagBatch) -> torch.Tensor:
        """Cross-entropy of every real step."""
        logits, _ = model(batch.x)
        per_step = F.cross_entropy(logits.transpose(1, 2), batch.y, reduction="none")
        return masked_mean(per_step, batch.mask)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss and per-frame accuracy."""
        total, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for start in range(0, len(self.validation), 64):
                part = self.validation[start : start + 64]
                x, _, mask = pad([s for s, _ in part])
                y, _, _ = pad([t for _, t in part])
                logits, _ = model(x)
                ce = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
                total += float((ce * mask).sum())
                correct += int(((logits.argmax(-1) == y) & mask).sum())
                count += int(mask.sum())
        return {"loss": total / count, "accuracy": correct / count}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.sampler.state_dict()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state_dict(tensors)
