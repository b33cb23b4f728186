"""Character vocabularies carried in a model's signature."""

from __future__ import annotations

import numpy as np

from rnnstream.errors import InputError

__all__ = ["Vocabulary"]


class Vocabulary:
    """Maps characters to token ids and back; ids are positions in ``chars``."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``; an unknown character is an :class:`InputError`."""
        try:
            return np.fromiter((self._ids[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as e:
            raise InputError(f"character {e.args[0]!r} is not in the model's vocabulary") from None

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return "".join(self.chars[int(i)] for i in np.ravel(ids))
