"""Built-in tagging data: every byte of Python source tagged as code, string or comment.

The labels come from the standard library's own ``tokenize`` module, run over the standard
library's source files (split by file as for the language model). Files that do not tokenize are
skipped.
"""

from __future__ import annotations

import io
import logging
import sysconfig
import tokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnstream.corpus import is_validation, stdlib_sources

__all__ = ["PY_TAGS", "TaggedData", "load_python_tags", "tag_python"]

log = logging.getLogger(__name__)

PY_TAGS = ("code", "string", "comment")
_STRING_TOKENS = {tokenize.STRING} | {
    getattr(tokenize, n)
    for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
    if hasattr(tokenize, n)
}


def tag_python(source: str) -> tuple[bytes, np.ndarray]:
    """``source`` as UTF-8 bytes and a tag per byte (index into :data:`PY_TAGS`).

    Raises ``tokenize.TokenError`` or ``SyntaxError`` if ``source`` does not tokenize.
    """
    lines = source.splitlines(keepends=True)
    starts = np.cumsum([0] + [len(line) for line in lines])
    tags = np.zeros(len(source), dtype=np.int64)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in _STRING_TOKENS:
            tag = 1
        elif tok.type == tokenize.COMMENT:
            tag = 2
        else:
            continue
        (r0, c0), (r1, c1) = tok.start, tok.end
        tags[starts[r0 - 1] + c0 : starts[r1 - 1] + c1] = tag
    data = source.encode("utf-8")
    if len(data) == len(source):
        return data, tags
    widths = [len(c.encode("utf-8")) for c in source]
    return data, np.repeat(tags, widths)


@dataclass(frozen=True)
class TaggedData:
    """Byte sequences with a tag per byte, split into training and validation."""

    labels: tuple[str, ...]
    train: tuple[tuple[bytes, np.ndarray], ...]
    validation: tuple[tuple[bytes, np.ndarray], ...]

    def describe(self) -> str:
        sizes = sum(len(b) for b, _ in self.train), sum(len(b) for b, _ in self.validation)
        return (
            f"Python source tags {'/'.join(self.labels)}: {len(self.train)} training files "
            f"({sizes[0]:,} bytes), {len(self.validation)} validation files ({sizes[1]:,} bytes)"
        )


def load_python_tags(
    max_files: int = 400,
    max_bytes: int = 8192,
    val_fraction: float = 0.1,
    root: Path | None = None,
) -> TaggedData:
    """The first ``max_bytes`` of up to ``max_files`` standard-library files, tagged."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    sources = stdlib_sources(root)
    train: list[tuple[bytes, np.ndarray]] = []
    validation: list[tuple[bytes, np.ndarray]] = []
    step = max(1, len(sources) // max_files)
    skipped = 0
    for path in sources[::step][:max_files]:
        try:
            data, tags = tag_python(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, tokenize.TokenError, SyntaxError):
            skipped += 1
            continue
        if not data:
            continue
        side = (
            validation if is_validation(path.relative_to(root).as_posix(), val_fraction) else train
        )
        side.append((data[:max_bytes], tags[:max_bytes]))
    if not validation and len(train) > 1:  # few files: still validate on one
        validation.append(train.pop())
    log.debug("skipped %d files that do not tokenize", skipped)
    return TaggedData(PY_TAGS, tuple(train), tuple(validation))
