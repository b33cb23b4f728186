"""Text corpora for character language models: the Python standard library, or any text file.

A corpus is a list of documents for training and one for validation. The standard library is
split by file (a file's relative path decides, by hash, which side it is on, so the split is the
same on every run and machine); a single text file is split by its tail. Documents become one
token stream ``BOS doc EOS BOS doc EOS ...``; characters outside the vocabulary become
:data:`~rnnstream.models.charlm.FALLBACK_CHAR`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

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

__all__ = [
    "TextCorpus",
    "corpus_chars",
    "encode",
    "is_validation",
    "load_corpus",
    "load_stdlib",
    "load_text_file",
    "stdlib_sources",
    "token_stream",
]

log = logging.getLogger(__name__)

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class TextCorpus:
    """Training and validation documents, and where they came from."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    source: str

    def describe(self) -> str:
        chars = sum(map(len, self.train)), sum(map(len, self.validation))
        return (
            f"{self.source}: {len(self.train)} training documents ({chars[0]:,} characters), "
            f"{len(self.validation)} validation documents ({chars[1]:,} characters)"
        )


def stdlib_sources(root: Path | None = None) -> list[Path]:
    """The ``.py`` files of the standard library (``root``: its directory), sorted."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    return sorted(
        p
        for p in root.rglob("*.py")
        if p.is_file() and not _SKIP_DIRS.intersection(p.relative_to(root).parts)
    )


def is_validation(relative: str, fraction: float) -> bool:
    """Whether the file at ``relative`` path is in the validation split (a hash, so stable)."""
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def load_stdlib(val_fraction: float = 0.05, root: Path | None = None) -> TextCorpus:
    """The standard library's source files, split by file; files that are not UTF-8 are skipped."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    train: list[str] = []
    validation: list[str] = []
    skipped = 0
    for path in stdlib_sources(root):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        side = (
            validation if is_validation(path.relative_to(root).as_posix(), val_fraction) else train
        )
        side.append(text)
    log.debug("skipped %d files of %s that are not UTF-8", skipped, root)
    return TextCorpus(tuple(train), tuple(validation), f"Python standard library at {root}")


def load_text_file(path: Path, val_fraction: float = 0.05) -> TextCorpus:
    """One UTF-8 text file: the last ``val_fraction`` of its lines is the validation document."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    cut = len(lines) - max(1, round(len(lines) * val_fraction)) if len(lines) > 1 else len(lines)
    train, validation = "".join(lines[:cut]), "".join(lines[cut:])
    if not train or not validation:
        raise ValueError(f"{path} is too short to split into training and validation text")
    return TextCorpus((train,), (validation,), str(path))


def load_corpus(data: str | Path, val_fraction: float = 0.05) -> TextCorpus:
    """``"stdlib"`` for the standard library, otherwise the path of a UTF-8 text file."""
    if str(data) == "stdlib":
        return load_stdlib(val_fraction)
    return load_text_file(Path(data), val_fraction)


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
