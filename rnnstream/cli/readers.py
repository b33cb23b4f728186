"""Reading what ``rnnstream stream`` feeds a model: text characters, JSON lines, CSV rows or .npy.

Whatever makes a source unreadable (a missing file or a folder, bytes that are not UTF-8, a line
that is not a frame, frames of different shapes in one chunk, an array holding no frames) is an
:class:`InputError` naming the source and, where there is one, the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import IO, Any

import click
import numpy as np

from rnnstream.errors import InputError
from rnnstream.runtime import Vocabulary

__all__ = [
    "FORMATS",
    "batched",
    "open_text",
    "read_characters",
    "read_frames",
    "read_npy",
    "read_source",
    "stack",
]

FORMATS = ("auto", "text", "jsonl", "csv", "npy")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def read_source(source: str, fmt: str, vocab: Vocabulary | None) -> Iterator[Any]:
    """The items SOURCE (a path, or ``-`` for stdin) feeds a model one step each: the token ids of
    its characters (a model with a vocabulary reading text), the rows of an .npy array, or one
    frame per line (JSON lists or comma-separated numbers)."""
    if fmt == "npy" or (fmt == "auto" and source.endswith(".npy")):
        return iter(read_npy(source))
    text = open_text(source)
    if vocab is not None and fmt in ("auto", "text"):
        return (int(vocab.encode(c)[0]) for c in read_characters(text, source))
    return read_frames(text, fmt, source)


def open_text(source: str) -> IO[str]:
    """SOURCE opened as UTF-8 text (``-``: stdin)."""
    if source != "-" and not Path(source).is_file():
        what = "is a folder" if Path(source).is_dir() else "does not exist"
        raise InputError(f"input {source} {what}: give a file, or - for stdin")
    try:
        return click.open_file(source, "r", encoding="utf-8", errors="strict")
    except OSError as e:
        raise InputError(f"cannot read input {source}: {e.strerror}") from e


@contextmanager
def _decoded(source: str) -> Iterator[None]:
    try:
        yield
    except UnicodeDecodeError as e:
        raise InputError(
            f"input {_name(source)} is not UTF-8 text: {e.reason} (byte 0x{e.object[e.start]:02x})"
        ) from None


def _name(source: str) -> str:
    return "stdin" if source == "-" else source


def read_characters(text: IO[str], source: str = "-") -> Iterator[str]:
    """One character at a time, as it arrives (works on a terminal or a pipe)."""
    with _decoded(source):
        while char := text.read(1):
            yield char


def read_frames(text: IO[str], fmt: str, source: str = "-") -> Iterator[np.ndarray]:
    """One float32 frame per non-empty line: a JSON list (``jsonl``) or numbers (``csv``)."""
    number = 0
    lines = iter(text)
    while True:
        with _decoded(source):
            line = next(lines, None)
        if line is None:
            return
        number += 1
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield _frame(stripped, fmt, f"{_name(source)} line {number}")


def _frame(text: str, fmt: str, where: str) -> np.ndarray:
    try:
        if fmt == "jsonl" or (fmt == "auto" and text.startswith("[")):
            values = json.loads(text)
        else:
            values = [float(v) for v in text.split(",")]
        frame = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, RecursionError) as e:
        raise InputError(f"{where}: cannot read a frame from {text[:60]!r} ({e})") from None
    if not np.isfinite(frame).all():
        raise InputError(f"{where}: a frame holds finite numbers, got {text[:60]!r}")
    if np.abs(frame).max(initial=0) > FLOAT32_MAX:
        raise InputError(f"{where}: {text[:60]!r} has numbers beyond float32's range")
    return frame.astype(np.float32)


def read_npy(path: str | Path) -> np.ndarray:
    """An ``.npy`` array of frames ``[T, F...]`` (or token ids ``[T]``); pickle is refused."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"cannot read {path} as .npy: {e}") from e
    if not isinstance(array, np.ndarray):
        raise InputError(f"{path} is an .npz archive: give one array as .npy")
    if array.ndim == 0:
        raise InputError(f"{path} holds a single value: expected steps [T, ...] (frames or ids)")
    if array.dtype.kind == "f" and float(np.abs(array).max(initial=0)) > FLOAT32_MAX:
        raise InputError(f"{path} has numbers beyond float32's range (frames are float32)")
    return array


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of up to ``size`` items."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def stack(chunk: list, first_step: int) -> np.ndarray:
    """The steps of one chunk as one array ``[T, ...]``; steps of different shapes are an error."""
    shapes = {np.shape(item) for item in chunk}
    if len(shapes) > 1:
        raise InputError(
            f"steps {first_step}-{first_step + len(chunk) - 1} have different shapes "
            f"{sorted(shapes)}: the steps of a chunk (--chunk) must have one shape"
        )
    return np.asarray(chunk)
