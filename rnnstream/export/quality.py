"""Task quality of a model on its validation data, for the model kinds that have a metric.

A character language model (``kind == "char_lm"``) is scored in bits per character on held-out
text: by default the validation files of the Python standard library (the demo model's data and
split, see :func:`rnnstream.corpus.load_corpus`). The text is cut into lanes that run side by side
with their state carried, exactly as :func:`rnnstream.models.scoring.bits_per_token` scores a
PyTorch model, so the same tokens give comparable numbers for PyTorch and a streamed ONNX model.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from rnnstream.corpus import load_corpus
from rnnstream.models.charlm import FALLBACK_CHAR
from rnnstream.models.scoring import bits_per_token, cut_lanes
from rnnstream.runtime import Model, Signature
from rnnstream.runtime.parity_record import TaskScore

__all__ = ["TASK_METRICS", "char_lm_tokens", "stream_bits_per_token", "task_quality"]

TASK_METRICS = {"char_lm": "bpc"}  # model kind -> metric (lower is better)


@lru_cache(maxsize=2)
def _validation_documents(data: str) -> tuple[str, ...]:
    return load_corpus(data).validation


def char_lm_tokens(signature: Signature, data: str, limit: int) -> np.ndarray:
    """The first ``limit`` token ids of ``data``'s validation documents, as the model reads them.

    Each document is ``BOS text EOS`` when the model has BOS/EOS ids; characters outside the
    vocabulary become the fallback character when the vocabulary has one, else are skipped.
    """
    vocab = signature.vocab or ""
    ids = {c: i for i, c in enumerate(vocab)}
    fallback = ids.get(FALLBACK_CHAR)
    out: list[int] = []
    for doc in _validation_documents(data):
        if signature.bos is not None:
            out.append(signature.bos)
        out.extend(i for i in (ids.get(c, fallback) for c in doc) if i is not None)
        if signature.eos is not None:
            out.append(signature.eos)
        if len(out) > limit:
            break
    return np.asarray(out[:limit], dtype=np.int64)


def stream_bits_per_token(
    model: Model, tokens: np.ndarray, lanes: int = 16, seq_len: int = 512
) -> float:
    """Bits per token of a streamed model predicting ``tokens`` (same lanes as PyTorch's)."""
    x, y = cut_lanes(tokens, min(lanes, len(tokens) - 1))
    stream = model.stream(batch=len(x))
    total = 0.0
    for t in range(0, x.shape[1], seq_len):
        logits = stream.feed(x[:, t : t + seq_len]).astype(np.float64)
        peak = logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits - peak).sum(axis=-1)) + peak[..., 0]
        target = np.take_along_axis(logits, y[:, t : t + seq_len, None], axis=-1)[..., 0]
        total += float((log_z - target).sum())
    return total / y.size / math.log(2)


def task_quality(
    reference: nn.Module | Model,
    candidate: Model,
    data: str,
    limit: int,
    max_increase: float,
) -> TaskScore | None:
    """The task metric of ``candidate`` next to ``reference``'s (None: the kind has none, or the
    model does not stream).

    ``reference`` is the float32 PyTorch model (scored with PyTorch) or a float32 streamed model.
    """
    sig = candidate.signature
    metric = TASK_METRICS.get(sig.kind)
    if metric is None or not sig.streamable:
        return None
    tokens = char_lm_tokens(sig, data, limit)
    if isinstance(reference, nn.Module):
        ref = bits_per_token(reference, torch.from_numpy(tokens))[1]
    else:
        ref = stream_bits_per_token(reference, tokens)
    value = stream_bits_per_token(candidate, tokens)
    return TaskScore(
        metric=metric,
        data=data,
        tokens=len(tokens),
        reference=round(ref, 5),
        value=round(value, 5),
        increase=round(value - ref, 5),
        max_increase=max_increase,
        passed=bool(value - ref <= max_increase),
    )
