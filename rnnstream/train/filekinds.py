"""Built-in classification data: which kind of file is this, from files every machine has.

Each kind is found in well-known places (the Python standard library, ``/usr/include``, scripts in
``/usr/bin`` told by their shebang, ...). The list is sorted, capped per kind by a hash of the
path (so the same files are chosen on every run), and split by file into training and validation
by the same hash. Only the first ``max_bytes`` of each file are kept: the task is to tell the
kind as the bytes stream in.
"""

from __future__ import annotations

import hashlib
import logging
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FILE_KINDS", "FileKindData", "find_files", "load_file_kinds"]

log = logging.getLogger(__name__)

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_BIN_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _walk(root: str | Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.rglob("*"):
        if p.suffix in suffixes and not _SKIP_DIRS.intersection(p.parts) and p.is_file():
            yield p


def _shebang(words: tuple[str, ...]) -> Callable[[], Iterator[Path]]:
    def find() -> Iterator[Path]:
        for d in _BIN_DIRS:
            if not Path(d).is_dir() or Path(d).is_symlink():
                continue
            for p in Path(d).iterdir():
                if p.is_symlink() or not p.is_file():
                    continue
                try:
                    with p.open("rb") as f:
                        first = f.readline(128)
                except OSError:
                    continue
                if first.startswith(b"#!") and any(w in first for w in words):
                    yield p

    return find


def _perl() -> Iterator[Path]:
    for root in sorted(Path("/usr/share").glob("perl*")) + sorted(Path("/usr/lib").glob("*/perl*")):
        yield from _walk(root, (".pm",))
    yield from _shebang((b"perl",))()


FILE_KINDS: dict[str, Callable[[], Iterator[Path]]] = {
    "python": lambda: _walk(_stdlib(), (".py",)),
    "c_header": lambda: _walk("/usr/include", (".h",)),
    "shell": _shebang((b"/sh", b"bash", b"dash", b"/usr/bin/env sh")),
    "perl": _perl,
    "text": lambda: (
        p for root in ("/usr/share/doc", _stdlib()) for p in _walk(root, (".txt", ".md", ".rst"))
    ),
    "xml": lambda: _walk("/usr/share", (".xml",)),
}


def _hash(path: Path, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{path.as_posix()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def find_files(kind: str, max_files: int) -> list[Path]:
    """Up to ``max_files`` files of ``kind`` (the same ones on every run), sorted."""
    found = sorted(set(FILE_KINDS[kind]()))
    return sorted(sorted(found, key=lambda p: _hash(p, "pick"))[:max_files])


@dataclass(frozen=True)
class FileKindData:
    """Heads of files (bytes) with their kind (index into ``labels``), split by file."""

    labels: tuple[str, ...]
    train: tuple[tuple[bytes, int], ...]
    validation: tuple[tuple[bytes, int], ...]

    def describe(self) -> str:
        counts = [
            sum(1 for _, k in self.train + self.validation if k == i)
            for i in range(len(self.labels))
        ]
        kinds = ", ".join(f"{n} {label}" for label, n in zip(self.labels, counts))
        return (
            f"file kinds: {len(self.train)} training and {len(self.validation)} validation "
            f"files ({kinds})"
        )


def load_file_kinds(
    kinds: tuple[str, ...] | None = None,
    *,
    max_files: int = 300,
    min_files: int = 20,
    max_bytes: int = 2048,
    val_fraction: float = 0.2,
) -> FileKindData:
    """Files of each kind in :data:`FILE_KINDS` (``kinds``: a subset), split by file.

    Without ``kinds``, a kind with fewer than ``min_files`` non-empty files on this machine is left
    out (logged); a kind asked for by name that has too few is a ``ValueError``, as is ending up
    with fewer than two kinds.
    """
    asked = kinds is not None
    kinds = tuple(kinds or FILE_KINDS)
    unknown = set(kinds) - set(FILE_KINDS)
    if unknown:
        raise ValueError(f"unknown file kinds {sorted(unknown)}; known: {sorted(FILE_KINDS)}")
    heads: dict[str, list[tuple[Path, bytes]]] = {}
    for kind in kinds:
        files = []
        for p in find_files(kind, max_files):
            try:
                with p.open("rb") as f:
                    head = f.read(max_bytes)
            except OSError:
                continue
            if head.strip():
                files.append((p, head))
        if len(files) < min_files:
            message = f"only {len(files)} {kind!r} files on this machine (need {min_files})"
            if asked:
                raise ValueError(message)
            log.warning("%s: leaving the kind out", message)
            continue
        heads[kind] = files
    if len(heads) < 2:
        raise ValueError(f"fewer than two file kinds have {min_files} files here: {sorted(heads)}")
    labels = tuple(heads)
    train: list[tuple[bytes, int]] = []
    validation: list[tuple[bytes, int]] = []
    for index, kind in enumerate(labels):
        for p, head in heads[kind]:
            side = validation if _hash(p, "split") < val_fraction else train
            side.append((head, index))
    return FileKindData(labels, tuple(train), tuple(validation))
