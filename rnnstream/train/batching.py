"""Variable-length batches: right padding, lengths and masks, and random crops."""

from __future__ import annotations

import math

import torch

__all__ = ["CropSampler", "masked_mean", "pad", "random_crop"]


def pad(
    sequences: list[torch.Tensor], value: float = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad ``[T_i, ...]`` sequences to ``[B, T, ...]``; returns padded, lengths, mask."""
    lengths = torch.tensor([len(s) for s in sequences])
    padded = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=value)
    mask = torch.arange(padded.shape[1])[None] < lengths[:, None]
    return padded, lengths, mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values [B, T]`` where ``mask [B, T]`` is true."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def random_crop(length: int, min_len: int, max_len: int, gen: torch.Generator) -> tuple[int, int]:
    """A random ``(start, stop)`` of a sequence of ``length``: between ``min_len`` and ``max_len``
    steps long (fewer if the sequence is shorter), anywhere in the sequence."""
    top = min(max_len, length)
    size = int(torch.randint(min(min_len, top), top + 1, (1,), generator=gen))
    start = int(torch.randint(0, length - size + 1, (1,), generator=gen))
    return start, start + size


class CropSampler:
    """Training batches of random crops of ``len(lengths)`` sequences, reproducible by seed.

    An epoch visits every sequence once in a random order (``per_epoch`` batches: more visits a
    sequence several times); each visit takes a random crop of ``min_len`` to ``max_len`` steps,
    from the start of the sequence with probability ``head_prob``. The random generator and the
    epoch's order are the sampler's state, so a resumed run draws the same batches.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        min_len: int,
        max_len: int,
        seed: int,
        *,
        per_epoch: int | None = None,
        head_prob: float = 0.0,
    ) -> None:
        if not lengths:
            raise ValueError("no training sequences")
        if not 1 <= min_len <= max_len:
            raise ValueError("crop lengths need 1 <= min_len <= max_len")
        self.lengths = lengths
        self.batch_size = batch_size
        self.min_len, self.max_len = min_len, max_len
        self.head_prob = head_prob
        self.per_epoch = per_epoch or math.ceil(len(lengths) / batch_size)
        self._gen = torch.Generator().manual_seed(seed)
        self._order = torch.zeros(0, dtype=torch.int64)

    def batch(self, index: int) -> list[tuple[int, int, int]]:
        """``(sequence, start, stop)`` of each crop of batch ``index`` of the epoch."""
        if index == 0 or not len(self._order):
            need = self.per_epoch * self.batch_size
            rounds = math.ceil(need / len(self.lengths))
            perms = [torch.randperm(len(self.lengths), generator=self._gen) for _ in range(rounds)]
            self._order = torch.cat(perms)[:need]
        crops = []
        for i in self._order[index * self.batch_size : (index + 1) * self.batch_size].tolist():
            start, stop = random_crop(self.lengths[i], self.min_len, self.max_len, self._gen)
            if float(torch.rand((), generator=self._gen)) < self.head_prob:
                start, stop = 0, stop - start
            crops.append((i, start, stop))
        return crops

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rng": self._gen.get_state(), "order": self._order}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if len(tensors["order"]) not in (0, self.per_epoch * self.batch_size):
            raise ValueError("the saved epoch order is for another batch size or dataset")
        self._gen.set_state(tensors["rng"])
        self._order = tensors["order"]
