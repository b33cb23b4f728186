"""Text as character-LM training data: a corpus's documents (:mod:`rnnstream.corpus`) become
one token stream ``BOS doc EOS BOS doc EOS ...``; characters outside the vocabulary become
:data:`~rnnstream.models.charlm.FALLBACK_CHAR`.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from rnnstream.models.charlm import (
    BOS,
    BOS_CHAR,
    EOS,
    EOS_CHAR,
    FALLBACK_CHAR,
    N_SPECIAL,
    CharLMConfig,
)

__all__ = ["corpus_chars", "encode", "token_stream"]


def corpus_chars(documents: tuple[str, ...]) -> str:
    """A vocabulary of the characters seen in ``documents`` (sorted), plus the fallback."""
    seen = set().union(*map(set, documents)) | {FALLBACK_CHAR}
    return "".join(sorted(seen - {BOS_CHAR, EOS_CHAR}))


def encode(text: str, config: CharLMConfig) -> np.ndarray:
    """Token ids (int64) of ``text``; characters outside the vocabulary become the fallback."""
    if FALLBACK_CHAR not in config.chars:
        raise ValueError(f"the vocabulary must contain the fallback character {FALLBACK_CHAR!r}")
    fallback = config.vocab.index(FALLBACK_CHAR)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.full(max(map(ord, config.chars)) + 1, fallback, dtype=np.int64)
    for i, c in enumerate(config.chars, start=N_SPECIAL):
        table[ord(c)] = i
    ids = np.full(len(codes), fallback, dtype=np.int64)
    known = codes < len(table)
    ids[known] = table[codes[known]]
    return ids


def token_stream(
    documents: tuple[str, ...], config: CharLMConfig, shuffle_seed: int | None = None
) -> torch.Tensor:
    """``BOS doc EOS`` for every document, concatenated (in an order shuffled by the seed)."""
    order = list(range(len(documents)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    parts = []
    for i in order:
        parts += [np.array([BOS]), encode(documents[i], config), np.array([EOS])]
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))
