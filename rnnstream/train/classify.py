"""The sequence-classification task: random crops in training, accuracy of the sequence label.

Sequences are token ids ``[T]`` or frames ``[T, F]``, each with a class index; batches are padded
with masks. A streamable (unidirectional) classifier learns from every step's logits, so its
estimate is useful while the sequence streams in; a bidirectional one from its sequence logits.
Validation scores each whole validation sequence's label (the last step's estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rnnstream.train.batching import CropSampler, masked_mean, pad
from rnnstream.train.filekinds import FileKindData

__all__ = ["ClassBatch", "ClassificationTask", "bytes_to_ids"]


def bytes_to_ids(data: bytes) -> torch.Tensor:
    """Byte ids (int64): byte ``b`` is token ``b``."""
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))


@dataclass(frozen=True)
class ClassBatch:
    """Padded inputs, their lengths and mask, and one class index per sequence."""

    x: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor


class ClassificationTask:
    """One label per sequence; metric: accuracy of the label after the whole sequence."""

    def __init__(
        self,
        train: Sequence[tuple[torch.Tensor, int]],
        validation: Sequence[tuple[torch.Tensor, int]],
        batch_size: int,
        min_len: int,
        max_len: int,
        seed: int = 0,
    ) -> None:
        if not validation:
            raise ValueError("no validation sequences")
        self.train = list(train)
        self.validation = [(x[:max_len], y) for x, y in validation]
        self.batch_size = batch_size
        self.sampler = CropSampler(
            [len(x) for x, _ in self.train], batch_size, min_len, max_len, seed, head_prob=0.5
        )

    @classmethod
    def from_file_kinds(
        cls, data: FileKindData, batch_size: int, min_len: int, max_len: int, seed: int = 0
    ) -> ClassificationTask:
        """The task over file heads as byte ids (validation: the first ``max_len`` bytes)."""
        return cls(
            [(bytes_to_ids(b), k) for b, k in data.train],
            [(bytes_to_ids(b), k) for b, k in data.validation],
            batch_size,
            min_len,
            max_len,
            seed,
        )

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.per_epoch

    def batch(self, index: int) -> ClassBatch:
        """Training batch ``index`` of the epoch: random crops of random sequences."""
        crops = self.sampler.batch(index)
        x, lengths, mask = pad([self.train[i][0][a:b] for i, a, b in crops])
        y = torch.tensor([self.train[i][1] for i, _, _ in crops])
        return ClassBatch(x, lengths, mask, y)

    def loss(self, model: nn.Module, batch: ClassBatch) -> torch.Tensor:
        """Cross-entropy: of every valid step (streamable model) or of the sequence logits."""
        if getattr(model.config, "bidirectional", False):
            return F.cross_entropy(model.sequence_logits(batch.x, batch.lengths), batch.y)
        logits, _ = model(batch.x)
        target = batch.y[:, None].expand(-1, logits.shape[1])
        per_step = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        return masked_mean(per_step, batch.mask)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss and accuracy of the sequence label."""
        total, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.validation), 64):
                part = self.validation[start : start + 64]
                x, lengths, _ = pad([s for s, _ in part])
                y = torch.tensor([label for _, label in part])
                logits = model.sequence_logits(x, lengths)
                total += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((logits.argmax(-1) == y).sum())
        n = len(self.validation)
        return {"loss": total / n, "accuracy": correct / n}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.sampler.state_dict()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state_dict(tensors)
