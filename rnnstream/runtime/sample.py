"""Temperature sampling from a character language model, one step per token, state carried.

The prompt (after BOS, when the model has one) goes in as one chunk in one run; every further
token is one ``Stream.step``. The prefix is never re-run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rnnstream.errors import InputError, SignatureError
from rnnstream.runtime.model import Model
from rnnstream.runtime.vocab import Vocabulary

__all__ = ["sample_text"]


def _next_token(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))


def sample_text(
    model: Model,
    prompt: str = "",
    max_tokens: int = 200,
    temperature: float = 1.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield generated characters one at a time, until EOS or ``max_tokens``.

    ``temperature`` 0 is greedy; higher values flatten the distribution. ``seed`` makes the
    sampling reproducible. Raises :class:`SignatureError` for a model without a vocabulary and
    :class:`InputError` for a prompt character outside it.
    """
    sig = model.signature
    if not sig.vocab:
        raise SignatureError(f"{model.name} has no vocabulary: it is not a language model")
    if temperature < 0:
        raise InputError(f"temperature must be >= 0, got {temperature}")
    vocab = Vocabulary(sig.vocab)
    ids = vocab.encode(prompt)
    if sig.bos is not None:
        ids = np.concatenate([[sig.bos], ids]).astype(np.int64)
    if ids.size == 0:
        raise InputError(f"{model.name} has no BOS token: give a prompt to start from")
    rng = np.random.default_rng(seed)
    stream = model.stream()
    logits = stream.feed(ids)[-1]
    for produced in range(max_tokens):
        token = _next_token(logits, temperature, rng)
        if token == sig.eos:
            return
        yield vocab.decode([token])
        if produced + 1 < max_tokens:
            logits = stream.step(token)
