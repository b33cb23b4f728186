"""Tiny real text for training tests: a slice of a standard-library source file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnstream.train import stdlib_sources


@pytest.fixture(scope="session")
def python_text() -> str:
    path = next(p for p in stdlib_sources() if p.name == "textwrap.py")
    return path.read_text(encoding="utf-8")[:12000]


@pytest.fixture
def text_file(tmp_path: Path, python_text: str) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(python_text, encoding="utf-8")
    return path
