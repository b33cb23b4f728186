"""Choosing the next token from a language model's log-probabilities: greedy, temperature, top-k
and top-p (nucleus) sampling with a seeded numpy generator."""

from __future__ import annotations

import math

import numpy as np
from numpy.random import default_rng  # at import: its first use would cost ~10 ms

from rnnstream.errors import InputError

__all__ = ["Sampler", "log_softmax", "most_likely"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities (float64) of ``logits`` along the last axis."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def most_likely(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely ids of ``logits`` (``[vocab]``) with their probabilities, most likely
    first (ties to the lowest id)."""
    probs = np.exp(log_softmax(logits))
    best = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), float(probs[i])) for i in best]


class Sampler:
    """Draws a token id from log-probabilities.

    ``temperature`` 0 is greedy (the argmax, ties to the lowest id); otherwise the
    log-probabilities are divided by it, ``top_k`` keeps the k most likely tokens and ``top_p``
    the smallest set of most likely tokens whose probability reaches p, and one uniform draw of a
    numpy generator seeded with ``seed`` picks the token (same seed, same draws).
    """

    def __init__(
        self,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> None:
        if not (math.isfinite(temperature) and temperature >= 0):
            raise InputError(f"temperature must be a finite number >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.rng = default_rng(seed)

    def choose(self, logits: np.ndarray) -> tuple[int, float]:
        """A token id drawn from ``logits`` (``[vocab]``) and its log-probability under them
        (temperature 1, before top-k/top-p)."""
        z = logits.astype(np.float64)
        z -= z.max()
        e = np.exp(z)
        log_total = math.log(e.sum())
        token = int(np.argmax(z)) if self.temperature == 0 else self._draw(z, e)
        return token, float(z[token]) - log_total

    def _draw(self, z: np.ndarray, e: np.ndarray) -> int:
        p = e if self.temperature == 1 else np.exp(z / self.temperature)
        ids = None  # None: the position in p is the token id
        if self.top_k is not None and self.top_k < p.size:
            ids = np.argpartition(-p, self.top_k - 1)[: self.top_k]
            p = p[ids]
        if self.top_p is not None and self.top_p < 1:
            order = np.argsort(-p, kind="stable")
            cumulative = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(cumulative, self.top_p * cumulative[-1])) + 1]
            ids = keep if ids is None else ids[keep]
            p = p[keep]
        cdf = np.cumsum(p)
        i = min(int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right")), p.size - 1)
        return i if ids is None else int(ids[i])
