"""Reading a stream's input from files: text characters, JSON lines, CSV rows, or ``.npy``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO

import numpy as np

from rnnstream.errors import InputError

__all__ = ["FORMATS", "batched", "read_characters", "read_frames", "read_npy"]

FORMATS = ("auto", "text", "jsonl", "csv", "npy")


def read_characters(source: IO[str]) -> Iterator[str]:
    """One character at a time, as it arrives (works on a terminal or a pipe)."""
    while char := source.read(1):
        yield char


def read_frames(source: IO[str], fmt: str) -> Iterator[np.ndarray]:
    """One float32 frame per non-empty line: a JSON list (``jsonl``) or numbers (``csv``)."""
    for number, line in enumerate(source, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            if fmt == "jsonl" or (fmt == "auto" and text.startswith("[")):
                values = json.loads(text)
            else:
                values = [float(v) for v in text.split(",")]
            yield np.asarray(values, dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise InputError(f"line {number}: cannot read a frame from {text[:60]!r} ({e})") from e


def read_npy(path: str | Path) -> np.ndarray:
    """An ``.npy`` array of frames ``[T, F...]`` (or token ids ``[T]``); pickle is refused."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as .npy: {e}") from e


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of up to ``size`` items."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
