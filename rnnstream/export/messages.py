"""Exceptions from torch or a user's code, shortened to what an error message can quote."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
