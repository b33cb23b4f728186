"""Text corpora for training and scoring character models: the Python standard library, or a file.

A corpus is a list of documents for training and one for validation. The standard library is
split by file (a file's relative path decides, by hash, which side it is on, so the split is the
same on every run and machine); a single text file is split by its tail. Torch-free: training
reads both sides, export scores a quantised model on the validation side.
"""

from __future__ import annotations

import hashlib
import logging
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TextCorpus",
    "is_validation",
    "load_corpus",
    "load_stdlib",
    "load_text_file",
    "stdlib_sources",
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
