"""The forecasting task: predict the next frame; metric: mean absolute error.

Training batches are random windows of the training series (variable length, padded with masks),
the target of each step being the next frame. Validation runs the model over the whole
validation series in one pass, as a stream would, and scores the steps after ``warmup``; it also
reports the MAE of repeating the last value, the naive forecast to beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rnnstream.train.batching import CropSampler, masked_mean, pad
from rnnstream.train.series import Series

__all__ = ["ForecastBatch", "ForecastTask"]


@dataclass(frozen=True)
class ForecastBatch:
    """Padded inputs and next-step targets ``[B, T, F]`` and the mask ``[B, T]``."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor


class ForecastTask:
    """Next-value regression over one training and one validation series ``[T, F]``."""

    def __init__(
        self,
        train: np.ndarray,
        validation: np.ndarray,
        batch_size: int,
        min_len: int,
        max_len: int,
        seed: int = 0,
        warmup: int = 50,
    ) -> None:
        self.train = torch.from_numpy(np.asarray(train, dtype=np.float32))
        self.validation = torch.from_numpy(np.asarray(validation, dtype=np.float32))
        self.warmup = min(warmup, len(validation) - 2)
        per_epoch = max(1, len(train) // max_len)  # an epoch: a batch per window of the series
        self.sampler = CropSampler(
            [len(train) - 1], batch_size, min_len, max_len, seed, per_epoch=per_epoch
        )

    @classmethod
    def from_series(
        cls, series: Series, batch_size: int, min_len: int, max_len: int, seed: int = 0
    ) -> ForecastTask:
        """The task over a series' training and validation parts."""
        return cls(series.train, series.validation, batch_size, min_len, max_len, seed)

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.per_epoch

    def batch(self, index: int) -> ForecastBatch:
        """Training batch ``index`` of the epoch: random windows and their next frames."""
        crops = self.sampler.batch(index)
        x, _, mask = pad([self.train[a:b] for _, a, b in crops])
        y, _, _ = pad([self.train[a + 1 : b + 1] for _, a, b in crops])
        return ForecastBatch(x, y, mask)

    def loss(self, model: nn.Module, batch: ForecastBatch) -> torch.Tensor:
        """Mean squared error of the real steps, in standardised units."""
        pred, _ = model(batch.x)
        scale = getattr(model, "scale", torch.ones(()))
        return masked_mean((((pred - batch.y) / scale) ** 2).mean(-1), batch.mask)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation MAE (in the data's units) and the naive forecast's."""
        x, y = self.validation[None, :-1], self.validation[None, 1:]
        with torch.no_grad():
            pred, _ = model(x)
        keep = slice(self.warmup, None)
        return {
            "mae": float((pred - y)[:, keep].abs().mean()),
            "naive_mae": float((x - y)[:, keep].abs().mean()),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.sampler.state_dict()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state_dict(tensors)
